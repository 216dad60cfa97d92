"""Laughter-like bursts: >= 4 loud, evenly spaced bursts ("ha-ha-ha-ha") that sound alike.

Speech syllables can be just as rhythmic and deeply modulated, so the tell used here is that consecutive
bursts share the same spectrum (the same vowel repeated): the correlation of their log-mel spectra stays
>= 0.9, which never held for two successive syllable pairs of the espeak sentences or the shared sample. The
bursts must also be mostly voiced (pyin), which keeps regular knocks and footsteps out; since pyin only runs
on the VAD's speech, laughter the VAD calls non-speech is missed (precision over recall).
"""

from __future__ import annotations

import numpy as np

from engines.perception.audio.prosody import SR, fine_levels

LAUGHTER = "laughs briefly"  # the cue phrase of a chain (the way EMER descriptions word laughter)
MIN_BURSTS = 4  # three similar bursts occur inside ordinary espeak speech (klatt4 voice)
INTERVAL_S = (0.15, 0.4)  # 2.5-6.7 bursts per second
MIN_DIP_DB = 8.0
MIN_SIMILARITY = 0.9


def laughter_bursts(x: np.ndarray, voiced: np.ndarray | None = None) -> list[tuple[float, float, int, float]]:
    """(start s, end s, bursts, mean spectral similarity) of each laughter-like chain.

    `voiced` (the 20 ms pyin voicing track) keeps only chains whose bursts are mostly voiced: laughter's
    "ha" is a vowel, while knocks or footsteps repeat just as regularly but have no pitch."""
    import librosa
    from scipy.signal import find_peaks

    if len(x) < SR // 2:
        return []
    lv = fine_levels(x)
    peaks, _ = find_peaks(lv, prominence=6.0, distance=12)
    peaks = peaks[lv[peaks] > np.percentile(lv, 95) - 30]
    if len(peaks) < MIN_BURSTS:
        return []
    mel = librosa.feature.melspectrogram(y=x, sr=SR, n_fft=512, hop_length=160, n_mels=24)
    spec = np.log(mel[:, np.minimum(peaks, mel.shape[1] - 1)].T + 1e-8)
    spec -= spec.mean(1, keepdims=True)
    spec /= np.maximum(np.linalg.norm(spec, axis=1, keepdims=True), 1e-9)

    chains: list[tuple[float, float, int, float]] = []
    cur: list[int] = [0]
    sims: list[float] = []

    def is_voiced(peak: int) -> bool:
        if voiced is None:
            return True
        k = int(round(peak * 0.01 / 0.02))  # 10 ms level grid -> 20 ms pitch grid, +-40 ms
        return bool(voiced[max(0, k - 2) : k + 3].any())

    def close() -> None:
        if len(cur) >= MIN_BURSTS and sum(is_voiced(peaks[i]) for i in cur) * 2 >= len(cur):
            a, b = peaks[cur[0]], peaks[cur[-1]]
            chains.append(
                (
                    round(max(0.0, a * 0.01 - 0.1), 2),
                    round(min(len(x) / SR, b * 0.01 + 0.1), 2),
                    len(cur),
                    round(float(np.mean(sims)), 3),
                )
            )

    for i in range(1, len(peaks)):
        a, b = peaks[i - 1], peaks[i]
        interval = (b - a) * 0.01
        dip = min(lv[a], lv[b]) - lv[a:b].min()
        sim = float(spec[i - 1] @ spec[i])
        regular = len(cur) < 2 or 0.7 <= (b - a) / (peaks[cur[-1]] - peaks[cur[-2]]) <= 1.4
        if INTERVAL_S[0] <= interval <= INTERVAL_S[1] and dip >= MIN_DIP_DB and sim >= MIN_SIMILARITY and regular:
            cur.append(i)
            sims.append(sim)
        else:
            close()
            cur, sims = [i], []
    close()
    return chains


def warm_up() -> None:
    """Compile the mel spectrogram's numba kernels now, for the float32 audio requests bring."""
    import librosa

    x = np.sin(2 * np.pi * 200 * np.arange(SR // 2) / SR).astype(np.float32)
    librosa.feature.melspectrogram(y=x, sr=SR, n_fft=512, hop_length=160, n_mels=24)
