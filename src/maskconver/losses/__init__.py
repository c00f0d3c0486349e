"""Loss functions shared by more than one meta-architecture.

* ``remax``: ReMaX's training relaxations (ReMask's relaxation factor and relaxed logits, the
  ReClass class overlap) and the auxiliary losses that go with them (the semantic
  cross-entropy, the softmax mask-ID cross-entropy), used by MaskConver and kMaX-DeepLab.
"""
