"""Fit tiny-native's VQ tokenizer so that its codes carry image information.

Two stages, both on HF's own modules (``ChameleonVQVAE.encoder`` and ``quant_conv``):

1. *Autoencoder.* The encoder is trained to reconstruct the image through an auxiliary
   decoder (:class:`PatchDecoder`, discarded afterwards: Chameleon's HF class has no decoder and
   nothing downstream needs one). No quantization yet: continuous latents train fast and
   leave no dead codes. Optionally (``silhouette_weight``) a second auxiliary head predicts
   the objects' pixel mask (:func:`hooked_vlm.data.synthetic.silhouette`) from the same
   latents: a low-level target (which pixels of each cell an object covers, whatever its
   colour, the background's or its texture) that keeps the outline in the codes, where the
   pixel loss spends the latent on colour and texture. It says nothing about which shape an
   object is: the codes stay local and low-level, as a pixel tokenizer's.
2. *Codebook by k-means.* ``quantize.embedding`` is set to the k-means centroids
   (scikit-learn) of the encoder's latent vectors, so HF's nearest-code lookup partitions the
   latent space where images actually put their latents.

The reconstruction error of the decoder from quantized latents is reported as a check that
the codes, not only the continuous latents, describe the image. :func:`code_embeddings` then
gives the decoder's code tokens a starting point that reflects the codebook (nearby codes,
nearby embeddings) instead of 512 unrelated random vectors.

Example:
    >>> report = fit_vq(model.model.vqmodel, pixels, steps=300, seed=0)
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange
from jaxtyping import Float
from sklearn.cluster import KMeans
from torch import Tensor, nn


class PatchDecoder(nn.Module):
    """Latents ``[b, c, 8, 8]`` -> pixels ``[b, out, 64, 64]``: two 3x3 convolutions, then each
    latent position predicts its own 8 x 8 pixel patch (pixel shuffle)."""

    def __init__(self, channels: int, patch: int = 8, width: int = 128,
                 out_channels: int = 3) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, out_channels * patch * patch, 1), nn.PixelShuffle(patch),
        )

    def forward(self, latents: Float[Tensor, "b c h w"]) -> Float[Tensor, "b out H W"]:
        return self.net(latents)


def latents(vqmodel: nn.Module, pixels: Float[Tensor, "b 3 H W"]) -> Float[Tensor, "b c h w"]:
    """The pre-quantization latents HF's ``ChameleonVQVAE.encode`` computes."""
    return vqmodel.quant_conv(vqmodel.encoder(pixels))


def fit_vq(
    vqmodel: nn.Module,
    pixels: Float[Tensor, "n 3 H W"],
    *,
    steps: int,
    seed: int,
    batch_size: int = 64,
    lr: float = 2e-3,
    kmeans_images: int = 1024,
    silhouettes: Float[Tensor, "n 1 H W"] | None = None,
    silhouette_weight: float = 0.0,
) -> dict[str, float]:
    """Train ``vqmodel``'s encoder (in place) and set its codebook; returns a small report.

    ``pixels`` are processor outputs (Chameleon scaling); ``silhouettes`` (0/1, same images)
    add the object-mask loss with weight ``silhouette_weight``. The report holds the final
    autoencoder MSE, the MSE through the quantized latents, and how many codes the k-means
    codebook uses on the fitted images (``codes_used``) with the code perplexity.
    """
    if silhouette_weight and silhouettes is None:
        raise ValueError("silhouette_weight > 0 needs the images' silhouettes")
    gen = torch.Generator().manual_seed(seed)
    embed_dim = vqmodel.quantize.embedding.weight.shape[1]
    decoder = PatchDecoder(embed_dim)
    mask_head = PatchDecoder(embed_dim, out_channels=1) if silhouette_weight else None
    params = [*vqmodel.encoder.parameters(), *vqmodel.quant_conv.parameters(),
              *decoder.parameters(), *(mask_head.parameters() if mask_head else ())]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=max(steps, 1))
    vqmodel.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        index = torch.randint(len(pixels), (batch_size,), generator=gen)
        batch = pixels[index]
        z = latents(vqmodel, batch)
        loss = nn.functional.mse_loss(decoder(z), batch)
        if mask_head is not None:
            loss = loss + silhouette_weight * nn.functional.binary_cross_entropy_with_logits(
                mask_head(z), silhouettes[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    vqmodel.eval()

    with torch.no_grad():
        subset = pixels[:kmeans_images]
        z = torch.cat([latents(vqmodel, chunk) for chunk in subset.split(256)])
        flat = rearrange(z, "b c h w -> (b h w) c").double().numpy()
        n_codes = vqmodel.quantize.embedding.weight.shape[0]
        kmeans = KMeans(n_clusters=n_codes, n_init=1, max_iter=100, random_state=seed).fit(flat)
        centroids = torch.from_numpy(kmeans.cluster_centers_).float()
        vqmodel.quantize.embedding.weight.copy_(centroids)
        quantized = rearrange(centroids[kmeans.labels_], "(b h w) c -> b c h w",
                              b=z.shape[0], h=z.shape[2])
        mse_q = nn.functional.mse_loss(decoder(quantized), subset).item()
        mse_c = nn.functional.mse_loss(decoder(z), subset).item()
    counts = np.bincount(kmeans.labels_, minlength=n_codes) / len(kmeans.labels_)
    used = counts[counts > 0]
    return {
        "vq_steps": steps,
        "vq_train_mse": float(loss.item()),
        "vq_mse_continuous": mse_c,
        "vq_mse_quantized": mse_q,
        "vq_pixel_variance": float(subset.var().item()),
        "codes_used": int((counts > 0).sum()),
        "code_perplexity": float(np.exp(-(used * np.log(used)).sum())),
    }


def code_embeddings(
    codebook: Float[Tensor, "k c"], width: int, seed: int, std: float = 0.02
) -> Float[Tensor, "k width"]:
    """Initial token embeddings of the VQ codes: the standardised codebook vectors through a
    seeded Gaussian projection to ``width``, with entries of standard deviation ``std`` (the
    decoder's own init), so distances between codes carry over (Johnson-Lindenstrauss).

    Example:
        >>> emb = code_embeddings(vqmodel.quantize.embedding.weight, 128, seed=0)
    """
    gen = torch.Generator().manual_seed(seed)
    z = (codebook - codebook.mean(0)) / codebook.std(0).clamp(min=1e-6)
    projection = torch.randn(codebook.shape[1], width, generator=gen)
    return z @ projection * (std / codebook.shape[1] ** 0.5)
