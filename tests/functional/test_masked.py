"""Pure helpers of sparse perturbations (``zolightning/functional/masked.py``)."""

import torch

from zolightning.functional.masked import pack_mask, unpack_mask


def test_masks_pack_to_bits_and_back():
    mask = torch.rand(7, 13) > 0.3
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.numel() == (7 * 13 + 7) // 8
    assert torch.equal(unpack_mask(packed, mask.shape), mask)
