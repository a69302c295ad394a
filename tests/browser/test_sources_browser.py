"""The source picker in a real JupyterLab + Chromium: an uploaded file and the microphone,
through to a source that changes the output.

One instrument (the built-in ``mini`` model) plays, with ``denoise = 0.5`` (a source is heard
only below 1), in a page of a separate Chromium launched with a fake capture device that plays a
WAV written by the test (``--use-fake-device-for-media-stream --use-fake-ui-for-media-stream
--use-file-for-fake-audio-capture=PATH``). Each test takes two completions before (no source,
and identical: same seed, same controls), then gives it audio through the page:

- upload: a click on the FileUpload button, and the file chooser it opens given a 2 s WAV of a
  C major chord written by the test (ipywidgets 8 keeps the ``input[type=file]`` out of the
  DOM, so ``page.set_input_files`` on a selector cannot reach it; the chooser's
  ``set_files`` is the same call on that input);
- microphone (after the picker's *clear*, which brings back the output from before the
  upload): about 2 s recorded with the picker's record button (ipywebrtc's AudioRecorder:
  webm/opus, decoded in the kernel by PyAV).

Then ``inst.get('source')`` is a latent ``[frames, channels]``, the next completions are rendered
with it (their request carries that very latent) and differ from the ones before, closer to the
source. First, in the session's Chromium (no capture device; its own small instrument, closed
before the other one starts) a recording with no microphone: the picker must say that no audio
arrived. The picker's own record toggle drives ipywebrtc's recorder from the kernel (the
recorder's own button changed `recording` in the page only, so the kernel never knew).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from demon_nb.bench import _instrument_page as ui
from demon_nb.bench._browser import CHROMIUM, CHROMIUM_ARGS, Lab, new_page

pytestmark = pytest.mark.browser

CELLS = ["import demon_nb\ninst = demon_nb.instrument()",
         "inst.set('denoise', 0.5)"]
MESSAGE_JS = "() => document.querySelector('.demon-source-picker .demon-source-message')?.textContent ?? ''"
FAKE_MIC_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]

# two completions without a source; kept in the kernel as _before
BEFORE = """\
import torch as _torch
_before = []
for _ in range(40):                 # slots born before a change of source keep the one they were born with
    _c = inst.wait_completion()
    _before = _before[-1:] + [_c] if _c.request.source is None else []
    if len(_before) == 2:
        break
if '_first_before' not in globals():
    _first_before = _before[1].latent.clone()
print(_json.dumps({'sources': [c.request.source is None for c in _before],
                   'same': bool(_torch.equal(_before[0].latent, _before[1].latent)),
                   'denoise': _before[1].request.denoise, 'source': inst.get('source') is None}))
"""
# the first completion rendered with the source, compared with the ones before
AFTER = """\
_src = inst.get('source')
_after = inst.wait_completion()
while _after.request.source is None:
    _after = inst.wait_completion()
_rms = lambda a, b: float((a - b).pow(2).mean().sqrt())
print(_json.dumps({'shape': list(_src.shape), 'frames': inst.model.frames, 'finite': bool(_torch.isfinite(_src).all()),
                   'same_source': bool(_torch.equal(_after.request.source, _src)),
                   'denoise': _after.request.denoise,
                   'changed': _rms(_after.latent, _before[1].latent),
                   'before_to_source': _rms(_before[1].latent, _src), 'after_to_source': _rms(_after.latent, _src),
                   'chosen': inst.sources.chosen, 'alive': inst.runner.alive, 'errors': len(inst.runner.errors)}))
"""


def chord_wav(path: Path, seconds: float, sample_rate: int = 48_000, channels: int = 2) -> Path:
    """A C major chord (with a slow tremolo) as 16-bit PCM WAV."""
    import soundfile as sf

    t = np.arange(int(seconds * sample_rate)) / sample_rate
    x = sum(0.2 * np.sin(2 * np.pi * f * t) for f in (261.63, 329.63, 392.0)) * (0.8 + 0.2 * np.sin(2 * np.pi * 2 * t))
    sf.write(str(path), np.repeat(x[:, None], channels, axis=1).astype(np.float32), sample_rate, subtype="PCM_16")
    return path


def open_instrument(lab: Lab, name: str) -> None:
    lab.write_notebook(name, CELLS)
    lab.open(name)
    lab.run_all(timeout=300)
    lab.wait_for(ui.PLAYING_JS, timeout=120, describe=ui.DESCRIBE_JS)


def kernel_cell(lab: Lab, code: str, timeout: float = 90):
    """Run ``code`` (which prints one JSON line last) in a new cell; returns the parsed line."""
    import json

    idx = lab.run_new_cell("import json as _json\n" + code, timeout=timeout)
    text = lab.output_text(idx).strip()
    try:
        return json.loads(text.splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        raise AssertionError(f"cell {idx} printed no JSON: {text[-2000:]!r}") from None


def completions_before(lab: Lab) -> None:
    before = kernel_cell(lab, BEFORE)
    assert before == {"sources": [True, True], "same": True, "denoise": 0.5, "source": True}, before


def assert_source_changes_the_output(lab: Lab, chosen: str) -> dict:
    deadline = time.monotonic() + 30
    while lab.kernel_json("inst.get('source') is None") and time.monotonic() < deadline:
        lab.page.wait_for_timeout(300)
    after = kernel_cell(lab, AFTER)
    assert after["shape"][0] == after["frames"] and len(after["shape"]) == 2 and after["finite"], after
    assert after["chosen"].startswith(chosen), after
    assert after["same_source"] and after["denoise"] == 0.5, after
    # before: identical completions; after: a different one, pulled towards the source
    assert after["changed"] > 0.1, after
    assert after["after_to_source"] < 0.8 * after["before_to_source"], after
    assert after["alive"] and after["errors"] == 0, after
    return after


def test_missing_microphone_says_so_in_the_picker(lab_server, browser, artifacts):
    """The session's Chromium has no capture device (getUserMedia: NotFoundError): record, stop;
    the picker must say that no audio arrived (MIC_TIMEOUT_S = 4 s after the stop). The small
    ``analytic`` model is enough here."""
    page = new_page(browser, width=1280, height=1700)
    lab = Lab(lab_server, page, artifacts=artifacts)
    try:
        lab.write_notebook("nomic.ipynb", ["import demon_nb\ninst = demon_nb.instrument('analytic', threads=None)"])
        lab.open("nomic.ipynb")
        lab.run_all(timeout=180)
        record = lab.page.locator(".demon-source-picker .demon-mic-record").first
        record.scroll_into_view_if_needed()
        record.click()
        lab.wait_for(f"() => ({MESSAGE_JS})().includes('recording')", timeout=20, describe=MESSAGE_JS)
        lab.page.wait_for_timeout(1000)
        record.click()
        seen = lab.kernel_json("{'mic_seen': inst.sources._mic_seen, 'alive': inst.runner.alive}")
        assert seen == {"mic_seen": 0, "alive": True}, seen
        text = lab.wait_for(f"() => {{ const t = ({MESSAGE_JS})(); return t.includes('no audio arrived') ? t : null; }}",
                            timeout=12, describe=MESSAGE_JS)
        assert text.startswith("⚠ microphone: no audio arrived"), text
    finally:
        close_quietly(lab)
        page.context.close()
        lab_server.shutdown_sessions()


@pytest.fixture(scope="module")
def mic_lab(lab_server, browser, artifacts, tmp_path_factory):
    """The instrument in a separate Chromium whose fake microphone plays a chord (the flags must
    go on the launch), started from the session's Playwright (``browser.browser_type`` is its
    chromium). The upload and the microphone tests share it, in file order."""
    wav = chord_wav(tmp_path_factory.mktemp("microphone") / "mic.wav", 3.0, channels=1)
    args = [*CHROMIUM_ARGS, *FAKE_MIC_ARGS, f"--use-file-for-fake-audio-capture={wav.resolve()}"]
    mic_browser = browser.browser_type.launch(executable_path=CHROMIUM, headless=True, args=args)
    try:
        page = new_page(mic_browser, width=1280, height=1700)
        lab = Lab(lab_server, page, artifacts=artifacts)
        open_instrument(lab, "sources.ipynb")
        yield lab
        close_quietly(lab)
    finally:
        mic_browser.close()
        lab_server.shutdown_sessions()


def close_quietly(lab: Lab) -> None:
    try:
        lab.run_new_cell("inst.close()", timeout=30)
    except AssertionError:  # the page is stuck: the caller shuts the session down anyway
        pass


def test_uploaded_file_becomes_a_source_that_changes_the_output(mic_lab, tmp_path):
    lab = mic_lab
    wav = chord_wav(tmp_path / "chord.wav", 2.0)
    completions_before(lab)
    # ipywidgets 8's FileUpload is a button whose input[type=file] is not in the DOM: the
    # button clicks it, and the page's file chooser gets the file
    button = lab.page.locator(".demon-source-picker button.widget-upload").first
    button.scroll_into_view_if_needed()
    assert "upload audio (0)" in button.text_content()
    with lab.page.expect_file_chooser() as chooser:
        button.click()
    assert chooser.value.element.get_attribute("type") == "file"
    assert not chooser.value.is_multiple()
    chooser.value.set_files(str(wav))
    text = lab.wait_for(f"() => {{ const t = ({MESSAGE_JS})(); return t.includes('chord.wav') ? t : null; }}",
                        timeout=60, describe=MESSAGE_JS)
    assert text.startswith("source: chord.wav (2.0 s at 48000 Hz)"), text
    assert "upload audio (1)" in button.text_content()
    assert_source_changes_the_output(lab, "chord.wav")


def test_microphone_recording_becomes_a_source_that_changes_the_output(mic_lab):
    lab = mic_lab
    # the picker's clear button: no source again, and the output is what it was before the upload
    clear = lab.page.locator(".demon-source-picker button:text-is('clear')").first
    clear.scroll_into_view_if_needed()
    clear.click()
    lab.wait_for(f"() => ({MESSAGE_JS})().startsWith('source: nothing')", timeout=20, describe=MESSAGE_JS)
    completions_before(lab)
    same = lab.kernel_json("bool(_torch.equal(_before[1].latent, _first_before))")
    assert same is True, "without a source the output is not what it was before the upload"

    record = lab.page.locator(".demon-source-picker .demon-mic-record").first
    record.scroll_into_view_if_needed()
    record.click()
    # recording: the page's MediaRecorder runs on the fake microphone
    lab.wait_for("() => window.last_audio_recorder?.mediaRecorder?.state === 'recording'", timeout=20,
                 describe="() => ({recording: window.last_audio_recorder?.get('recording'),"
                          " state: window.last_audio_recorder?.mediaRecorder?.state})")
    lab.page.wait_for_timeout(2000)
    record.click()
    text = lab.wait_for(f"() => {{ const t = ({MESSAGE_JS})(); return t.includes('microphone') ? t : null; }}",
                        timeout=60, describe=MESSAGE_JS)
    assert text.startswith("source: microphone.webm ("), text          # decoded, not an error
    seconds = float(text.split("(")[1].split(" s")[0])
    assert 1.5 <= seconds <= 4.0, text
    assert_source_changes_the_output(lab, "microphone.webm")
