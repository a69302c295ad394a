"""Audio-domain measures of decoded music (issue #16): key, tempo, pulse, melody, peak, style.

Pure functions on decoded audio, all spectral work done by librosa.  ``analyze(audio,
sample_rate, tonic, mode, bpm)`` returns one render's figures; ``summarize(rows)`` the
means/medians/counts over renders; ``style_accuracy`` trains and tests a nearest-centroid
style classifier on MFCC statistics.  Audio is mixed to mono and resampled to
``ANALYSIS_SR`` (22050 Hz) before any analysis; the peak is taken on the input as given.
"""

from __future__ import annotations

import numpy as np

ANALYSIS_SR = 22050
HOP = 256  # 11.6 ms analysis frames
# Krumhansl & Kessler (1982) probe-tone profiles, index 0 = tonic
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
CHROMA_FMIN_MIDI = 36  # C2: the bass register and up (sub-bass kick thumps are not pitch classes)
CHROMA_OCTAVES = 6
BINS_PER_OCTAVE = 36
MELODY_MIDI = (74, 89)  # D5-F6, 587-1397 Hz: the melody register above the chord voicings
OCTAVE_FACTORS = (1.0, 2.0, 0.5)  # tempo errors folded: the analysis tempo may be x2 or x0.5 the prompt
METRICAL_FACTORS = OCTAVE_FACTORS + (1.5, 2.0 / 3.0)  # plus dotted/triplet-level confusions
PULSE_BPM = (30.0, 200.0)  # lag range of the pulse clarity: a beat at 200 bpm up to the 2-beat kick-snare cycle at 60
N_MFCC = 20
# 13 frames (0.3 s at hop 512) instead of librosa's 31: a 31-frame time median erases melody notes
# shorter than ~0.36 s (an 8th at 125 bpm is 0.24 s); the key estimates are the same with either
HPSS_KERNEL = (13, 31)


def to_mono(audio, sample_rate: int, target_sr: int = ANALYSIS_SR) -> np.ndarray:
    """``[N]``, ``[A, N]`` or ``[1, A, N]`` (numpy or torch) -> mono float32 ``[N']`` at ``target_sr``
    (channel mean, then librosa's default soxr resampler)."""
    import librosa

    x = _as_numpy(audio)
    while x.ndim > 2:
        if x.shape[0] != 1:
            raise ValueError(f"audio: expected one render [A, N], got shape {x.shape}")
        x = x[0]
    y = x.mean(0) if x.ndim == 2 else x
    if sample_rate != target_sr:
        y = librosa.resample(y, orig_sr=sample_rate, target_sr=target_sr)
    return np.ascontiguousarray(y, dtype=np.float32)


def peak(audio) -> float:
    """``max |x|`` over all channels and samples (1.0 = full scale)."""
    return float(np.abs(_as_numpy(audio)).max(initial=0.0))


def harmonic(y: np.ndarray) -> np.ndarray:
    """Harmonic part by median-filtering HPSS (Fitzgerald 2010, ``librosa.effects.harmonic``), the
    horizontal median over ``HPSS_KERNEL[0]`` STFT frames, the vertical over ``HPSS_KERNEL[1]`` bins."""
    import librosa

    return librosa.effects.harmonic(y, kernel_size=HPSS_KERNEL)


def chroma(y_harm: np.ndarray, sr: int = ANALYSIS_SR) -> tuple[np.ndarray, np.ndarray]:
    """``(magnitude [12], energy [12])``: time sums of CQT chroma (C2 and up, 36 bins/octave, A440),
    from ``|CQT|`` and ``|CQT|^2``; index 0 = C."""
    import librosa

    fmin = librosa.midi_to_hz(CHROMA_FMIN_MIDI)
    c = np.abs(librosa.cqt(y_harm, sr=sr, hop_length=HOP, fmin=fmin, n_bins=CHROMA_OCTAVES * BINS_PER_OCTAVE,
                           bins_per_octave=BINS_PER_OCTAVE, tuning=0.0))
    kw = dict(sr=sr, hop_length=HOP, fmin=fmin, norm=None, tuning=0.0, n_octaves=CHROMA_OCTAVES,
              bins_per_octave=BINS_PER_OCTAVE)
    mag = librosa.feature.chroma_cqt(C=c, **kw).sum(1)
    energy = librosa.feature.chroma_cqt(C=c**2, **kw).sum(1)
    return mag, energy


def key_scores(profile: np.ndarray) -> np.ndarray:
    """``[2, 12]`` Pearson correlations ``r(profile, roll(KK, tonic))``; row 0 major, row 1 minor."""
    p = np.asarray(profile, dtype=np.float64)
    out = np.zeros((2, 12))
    if np.ptp(p) <= 0:
        return out
    for m, kk in enumerate((KK_MAJOR, KK_MINOR)):
        for tonic in range(12):
            out[m, tonic] = np.corrcoef(p, np.roll(kk, tonic))[0, 1]
    return out


def estimate_key(profile: np.ndarray) -> tuple[int, str, float]:
    """``(tonic, mode, r)`` of the best of 24 Krumhansl-Kessler keys (Krumhansl-Schmuckler algorithm)."""
    s = key_scores(profile)
    m, tonic = np.unravel_index(int(s.argmax()), s.shape)
    return int(tonic), ("major", "minor")[m], float(s[m, tonic])


def relative(tonic: int, mode: str) -> tuple[int, str]:
    """The relative key (same 7 pitch classes): major ``t`` <-> minor ``t + 9``."""
    return ((tonic + 9) % 12, "minor") if mode == "major" else ((tonic + 3) % 12, "major")


def key_exact(estimated: tuple, tonic: int, mode: str) -> bool:
    """Tonic and mode both right."""
    return int(estimated[0]) % 12 == int(tonic) % 12 and estimated[1] == mode


def key_notes(estimated: tuple, tonic: int, mode: str) -> bool:
    """The estimated key uses the prompted key's notes: exact, or its relative major/minor."""
    return key_exact(estimated, tonic, mode) or key_exact(estimated, *relative(tonic, mode))


def scale_share(energy: np.ndarray, tonic: int, mode: str) -> float:
    """``sum(energy on the key's 7 pitch classes) / sum(energy)``; chance 7/12."""
    e = np.asarray(energy, dtype=np.float64)
    total = e.sum()
    if total <= 0:
        return 0.0
    return float(e[(int(tonic) + np.asarray(SCALES[mode])) % 12].sum() / total)


def onset_envelope(y: np.ndarray, sr: int = ANALYSIS_SR) -> np.ndarray:
    """Spectral flux onset strength (positive log-mel differences, ``librosa.onset.onset_strength``)."""
    import librosa

    return librosa.onset.onset_strength(y=y, sr=sr, hop_length=HOP)


def estimate_tempo(env: np.ndarray, sr: int = ANALYSIS_SR) -> float:
    """Tempo in bpm: librosa's beat tracker (Ellis 2007, tempo from the onset autocorrelation with
    its default 120 bpm prior), refined to ``60 / mean`` of the inter-beat intervals within 20 % of
    their median; ``nan`` without a pulse."""
    import librosa

    env = np.asarray(env, dtype=np.float64)
    if env.size < 8 or not np.isfinite(env).all() or env.max() <= 0:
        return float("nan")
    tempo, beats = librosa.beat.beat_track(onset_envelope=env, sr=sr, hop_length=HOP, units="time")
    tempo = float(np.atleast_1d(tempo)[0])
    ibi = np.diff(beats)
    if ibi.size >= 3:
        med = np.median(ibi)
        good = ibi[np.abs(ibi - med) <= 0.2 * med]
        if good.size >= 3:
            return float(60.0 / good.mean())
    return tempo if tempo > 0 else float("nan")


def tempo_error(estimated: float, bpm: float, factors=OCTAVE_FACTORS) -> float:
    """``min_k |est - k bpm| / (k bpm)`` over the folding factors ``k``; ``inf`` when ``est`` is nan."""
    if not np.isfinite(estimated) or estimated <= 0:
        return float("inf")
    return float(min(abs(estimated - k * bpm) / (k * bpm) for k in factors))


def pulse_clarity(env: np.ndarray, sr: int = ANALYSIS_SR, bpm_range=PULSE_BPM) -> float:
    """Max over beat lags (``bpm_range``) of the onset envelope's autocorrelation, mean removed,
    normalized by lag 0 (``librosa.autocorrelate``); 0 = no periodicity, 1 = a perfect pulse."""
    import librosa

    e = np.asarray(env, dtype=np.float64)
    e = e - e.mean()
    ac = librosa.autocorrelate(e)
    if ac.size == 0 or ac[0] <= 0:
        return 0.0
    fps = sr / HOP
    lo = int(np.floor(60.0 * fps / bpm_range[1]))
    hi = min(int(np.ceil(60.0 * fps / bpm_range[0])), ac.size - 1)
    if hi <= lo:
        return 0.0
    return float(max(ac[lo:hi + 1].max() / ac[0], 0.0))


def melody_onsets(y_harm: np.ndarray, sr: int = ANALYSIS_SR, midi=MELODY_MIDI, floor_db: float = -28.0,
                  delta_db: float = 6.0) -> np.ndarray:
    """Onset times (s) of notes in the melody register: semitone CQT over ``midi``, in dB relative
    to the render's loudest semitone CQT bin over C2-F6, floored at ``floor_db``; onset strength =
    the largest per-bin rise over 2 frames (``onset_strength``, ``aggregate=max``); onsets = its peaks
    ``delta_db`` above their +-0.1 s mean (``onset_detect``, unnormalized).  A counted note thus rises
    at least 6 dB and ends within 22 dB of the loudest note: a low-level haze counts nothing."""
    import librosa

    n = midi[1] - midi[0] + 1
    c = np.abs(librosa.cqt(y_harm, sr=sr, hop_length=HOP, fmin=librosa.midi_to_hz(midi[0]), n_bins=n,
                           bins_per_octave=12, tuning=0.0))
    ref = _harmonic_ref(y_harm, sr)
    if ref <= 0:
        return np.zeros(0)
    db = np.maximum(librosa.amplitude_to_db(c, ref=ref, top_db=None), floor_db)
    env = librosa.onset.onset_strength(S=db, sr=sr, hop_length=HOP, lag=2, max_size=1, aggregate=np.max)
    fps = sr / HOP
    return librosa.onset.onset_detect(onset_envelope=env, sr=sr, hop_length=HOP, units="time", normalize=False,
                                      pre_max=int(0.03 * fps), post_max=int(0.03 * fps) + 1,
                                      pre_avg=int(0.1 * fps), post_avg=int(0.1 * fps) + 1,
                                      delta=delta_db, wait=int(0.08 * fps))


def _harmonic_ref(y_harm: np.ndarray, sr: int) -> float:
    """Loudest semitone-CQT magnitude over C2-F6 (the level melody dB are relative to)."""
    import librosa

    c = np.abs(librosa.cqt(y_harm, sr=sr, hop_length=HOP, fmin=librosa.midi_to_hz(CHROMA_FMIN_MIDI),
                           n_bins=MELODY_MIDI[1] - CHROMA_FMIN_MIDI + 1, bins_per_octave=12, tuning=0.0))
    return float(c.max(initial=0.0))


def mfcc_stats(y: np.ndarray, sr: int = ANALYSIS_SR) -> np.ndarray:
    """``[2 N_MFCC - 1]``: per-coefficient means of ``librosa.feature.mfcc`` without c0 (the log level,
    so a gain change leaves the features alone) and the standard deviations of all coefficients."""
    import librosa

    m = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=N_MFCC)
    return np.concatenate([m[1:].mean(1), m.std(1)])


def analyze(audio, sample_rate: int, tonic: int, mode: str, bpm: float) -> dict:
    """Every per-render figure of one decoded render ``[A, N]`` against its prompted key and tempo."""
    y = to_mono(audio, sample_rate)
    h = harmonic(y)
    mag, energy = chroma(h)
    est = estimate_key(mag)
    env = onset_envelope(y)
    tempo = estimate_tempo(env)
    seconds = y.size / ANALYSIS_SR
    return {
        "peak": peak(audio),
        "key_estimate": [est[0], est[1]],
        "key_exact": key_exact(est, tonic, mode),
        "key_notes": key_notes(est, tonic, mode),
        "in_scale_chroma": scale_share(energy, tonic, mode),
        "tempo_estimate": tempo,
        "tempo_error": tempo_error(tempo, bpm),
        "tempo_error_metrical": tempo_error(tempo, bpm, METRICAL_FACTORS),
        "pulse_clarity": pulse_clarity(env),
        "melody_onsets_per_s": len(melody_onsets(h)) / seconds if seconds > 0 else 0.0,
        "mfcc": mfcc_stats(y),
    }


def summarize(rows: list[dict], digits: int = 4) -> dict:
    """Means of the rates/shares, medians of the tempo errors, the count of renders over full scale."""
    n = len(rows)
    if n == 0:
        return {"n": 0}

    def mean(k):
        return round(float(np.mean([r[k] for r in rows])), digits)

    def median(k):
        v = float(np.median([r[k] for r in rows]))
        return round(v, digits) if np.isfinite(v) else None

    return {
        "n": n,
        "key_exact": mean("key_exact"),
        "key_notes": mean("key_notes"),
        "in_scale_chroma": mean("in_scale_chroma"),
        "tempo_error_median": median("tempo_error"),
        "tempo_error_metrical_median": median("tempo_error_metrical"),
        "pulse_clarity": mean("pulse_clarity"),
        "melody_onsets_per_s": mean("melody_onsets_per_s"),
        "over_full_scale": sum(r["peak"] > 1.0 for r in rows),
        "peak_max": round(max(r["peak"] for r in rows), digits),
    }


def nearest_centroid(train_x: np.ndarray, train_y, test_x: np.ndarray) -> np.ndarray:
    """Labels of ``test_x`` by the nearest class mean (Euclidean) after z-scoring with the training
    set's per-feature mean and std."""
    train_x, test_x = np.asarray(train_x, np.float64), np.asarray(test_x, np.float64)
    mu, sd = train_x.mean(0), train_x.std(0) + 1e-9
    a, b = (train_x - mu) / sd, (test_x - mu) / sd
    labels = np.asarray(train_y)
    classes = np.unique(labels)
    centroids = np.stack([a[labels == c].mean(0) for c in classes])
    d = ((b[:, None, :] - centroids[None]) ** 2).sum(-1)
    return classes[d.argmin(1)]


def style_accuracy(features: np.ndarray, styles, folds) -> float:
    """Held-out accuracy of :func:`nearest_centroid`: for each fold value, train on the other folds'
    renders and test on that fold's (e.g. ``folds`` = the seed index); mean over all test renders."""
    x, y, f = np.asarray(features), np.asarray(styles), np.asarray(folds)
    hits = []
    for k in np.unique(f):
        test = f == k
        if test.all():
            continue
        hits.extend(nearest_centroid(x[~test], y[~test], x[test]) == y[test])
    return float(np.mean(hits)) if hits else float("nan")


def _as_numpy(audio) -> np.ndarray:
    if hasattr(audio, "detach"):
        audio = audio.detach().cpu().float().numpy()
    return np.asarray(audio, dtype=np.float32)
