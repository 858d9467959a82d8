"""Losses, one module per recipe family: pure, jit-able functions with the reference math.

* `jaxsep.losses.xumx`: magnitude MSE, multi-domain + combination loss, Con-Reg, Dis-Reg.
* `jaxsep.losses.chimera`: deep clustering (nussl / asteroid normalisation), mask inference,
  permutation-invariant L1, the chimera combination.
* `jaxsep.losses.vqvae`: Jukebox lmix, multispectral, commitment, stage-2 latent matching.
"""
