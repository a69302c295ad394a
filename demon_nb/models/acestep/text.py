"""ACE-Step 1.5 text conditioning: prompt formatting, Qwen3 hidden states, condition encoder.

The caption goes through the whole Qwen3 model; the lyrics only through its token
embedding (the condition encoder's lyric transformer contextualizes them). With
no reference audio the timbre encoder sees the first 30 s of the silence latent.
The condition encoder packs lyric, timbre and caption tokens into one sequence
for the DiT's cross-attention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

# Instructions the DiT was trained with, one per task.
INSTRUCTIONS = {
    "text2music": "Fill the audio semantic mask based on the given conditions:",
    "cover": "Generate audio semantic tokens based on the given conditions:",
    "repaint": "Repaint the mask area based on the given conditions:",
}
END = "<|endoftext|>"
TIMBRE_SECONDS = 30  # reference length the timbre encoder expects


def metadata_text(bpm=None, key=None, time_signature=None, duration=None) -> str:
    """The ``# Metas`` block: one ``- name: value`` line each, ``N/A`` when unknown."""
    bpm_s = str(bpm) if bpm is not None and bpm > 0 else "N/A"
    sig_s = time_signature if time_signature and str(time_signature).strip() else "N/A"
    key_s = key if key and key.strip() else "N/A"
    dur_s = f"{int(duration)} seconds" if duration is not None and duration > 0 else "30 seconds"
    return f"- bpm: {bpm_s}\n- timesignature: {sig_s}\n- keyscale: {key_s}\n- duration: {dur_s}\n"


def caption_text(caption: str, task: str = "text2music", **meta) -> str:
    """Instruction, caption and metadata in the SFT layout the text encoder was trained on."""
    instruction = INSTRUCTIONS[task]
    return (f"# Instruction\n{instruction}\n\n# Caption\n{caption}\n\n"
            f"# Metas\n{metadata_text(**meta)}{END}\n")


def lyrics_text(lyrics: str = "", language: str = "en") -> str:
    """Language header plus the lyric text."""
    return f"# Languages\n{language}\n\n# Lyric\n{lyrics}{END}"


@dataclass(frozen=True, eq=False)
class AceCondition:
    """One condition: the packed cross-attention sequence ``hidden [L, D]`` and its ``mask [L]``."""

    hidden: torch.Tensor
    mask: torch.Tensor
    prompt: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.hidden.shape[0])


def check_prompt_args(prompt, lyrics, bpm, key, time_signature, duration, language, task) -> None:
    if not isinstance(prompt, str):
        raise ValueError(f"prompt: expected a string, got {type(prompt).__name__}")
    if not isinstance(lyrics, str):
        raise ValueError(f"lyrics: expected a string, got {type(lyrics).__name__}")
    if bpm is not None and (isinstance(bpm, bool) or not isinstance(bpm, (int, float)) or not 0 < bpm <= 400):
        raise ValueError(f"bpm: expected None or a number in (0, 400], got {bpm!r}")
    if key is not None and not isinstance(key, str):
        raise ValueError(f"key: expected None or a string such as 'C major', got {key!r}")
    if time_signature is not None and not isinstance(time_signature, (str, int)):
        raise ValueError(f"time_signature: expected None, an int or a string such as '4', got {time_signature!r}")
    if duration is not None and (not isinstance(duration, (int, float)) or not 0 < duration <= 600):
        raise ValueError(f"duration: expected None or seconds in (0, 600], got {duration!r}")
    if not isinstance(language, str) or not language:
        raise ValueError(f"language: expected a language code such as 'en', got {language!r}")
    if task not in INSTRUCTIONS:
        raise ValueError(f"task: expected one of {sorted(INSTRUCTIONS)}, got {task!r}")


class AceStepTextEncoder:
    """``TextEncoder``: caption (+ lyrics, bpm, key, duration) -> :class:`AceCondition`."""

    def __init__(self, tokenizer, text_model, condition_encoder, *, frame_rate: float = 25.0,
                 duration: float = 30.0, device=None, dtype=torch.float32,
                 max_text_length: int = 256, max_lyric_length: int = 2048):
        self.tokenizer = tokenizer
        self.text_model = text_model
        self.condition_encoder = condition_encoder
        self.frame_rate = float(frame_rate)
        self.duration = float(duration)  # metadata default: the loop length
        self.device = torch.device(device) if device is not None else next(text_model.parameters()).device
        self.dtype = dtype
        self.max_text_length = max_text_length
        self.max_lyric_length = max_lyric_length

    def _tokens(self, text: str, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.tokenizer([text], padding="longest", truncation=True, max_length=limit, return_tensors="pt")
        return out.input_ids.to(self.device), out.attention_mask.to(self.device).bool()

    def timbre_reference(self) -> torch.Tensor:
        """The silence reference for the timbre encoder, ``[1, ceil(30 * fps), C]``."""
        frames = math.ceil(TIMBRE_SECONDS * self.frame_rate)
        silence = self.condition_encoder.silence_latent
        return silence[:, :frames, :].to(self.device, self.dtype)

    @torch.no_grad()
    def encode(self, prompt: str, *, lyrics: str = "", bpm=None, key=None, time_signature=None,
               duration=None, language: str = "en", task: str = "text2music") -> AceCondition:
        """One condition for the denoiser (the formula of ACE-Step's SFT prompt template)."""
        check_prompt_args(prompt, lyrics, bpm, key, time_signature, duration, language, task)
        duration = self.duration if duration is None else float(duration)
        meta = {"bpm": bpm, "key": key, "time_signature": None if time_signature is None else str(time_signature),
                "duration": duration}
        text_ids, text_mask = self._tokens(caption_text(prompt, task, **meta), self.max_text_length)
        lyric_ids, lyric_mask = self._tokens(lyrics_text(lyrics, language), self.max_lyric_length)
        text_hidden = self.text_model(input_ids=text_ids).last_hidden_state.to(self.dtype)
        lyric_hidden = self.text_model.get_input_embeddings()(lyric_ids).to(self.dtype)
        hidden, mask = self.condition_encoder(
            text_hidden_states=text_hidden, text_attention_mask=text_mask,
            lyric_hidden_states=lyric_hidden, lyric_attention_mask=lyric_mask,
            refer_audio_acoustic_hidden_states_packed=self.timbre_reference(),
            refer_audio_order_mask=torch.zeros(1, device=self.device, dtype=torch.long))
        return AceCondition(hidden[0], mask[0], prompt, {**meta, "lyrics": lyrics, "language": language, "task": task})
