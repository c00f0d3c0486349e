"""``maskconver serve``: an HTTP API and a web page over one ``Predictor``.

``app.create_app(predictor, ...)`` builds the Starlette application (tests drive it with the
Starlette ``TestClient``, no socket); ``commands/serve.py`` runs it under uvicorn. The parts:

* ``limits``: request bounds (body size, requests in flight, body read deadline);
* ``upload``: the image out of a request body (multipart field ``file`` or a raw body), decoded
  in memory with a pixel limit;
* ``results``: a prediction as JSON records, a COCO panoptic PNG or an overlay PNG;
* ``static/``: the page at ``/`` (plain HTML, CSS and JS served from the package).

Starlette, uvicorn and python-multipart are the optional ``serve`` extra; they are imported only
inside ``create_app`` and the command, so every module here imports without them.
"""
