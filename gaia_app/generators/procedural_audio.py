"""Sounds synthesised offline with numpy for the built-in generator, written as 16-bit mono
PCM WAV with the standard `wave` module.

The description's words pick the sound (tone, noise, wind, rain, explosion, laser, coin,
jingle, footsteps, click); the seeded generator varies pitch, timing and colour. Everything
is computed on whole sample arrays: filters are applied in the frequency domain (one FFT),
a filter that changes over time is a cross-fade between a few fixed ones, and melodies index
per-sample tables by note number. The result is centred, faded in and out over a few
milliseconds against clicks and normalised to a peak below full scale, so it never clips.
"""

from __future__ import annotations

import io
import wave
from collections.abc import Callable, Sequence

import numpy as np

from gaia_app.generators.base import Progress

Words = Sequence[str]

PEAK = 0.89  # about -1 dBFS: loud, with headroom so no sample reaches full scale
FADE_SECONDS = 0.005
TAU = 2 * np.pi


def _shaped_noise(rng: np.random.Generator, count: int, rate: int, cutoffs: list[float],
                  highpass: float = 0.0) -> np.ndarray:
    """White noise low-passed at each cutoff (rows of the result), from a single FFT."""
    spectrum = np.fft.rfft(rng.standard_normal(count))
    frequencies = np.fft.rfftfreq(count, 1 / rate)
    if highpass:
        spectrum *= 1 / np.sqrt(1 + (highpass / np.maximum(frequencies, 1e-3)) ** 4)
    # Second-order Butterworth magnitude: a gentle, natural-sounding slope.
    gains = 1 / np.sqrt(1 + (frequencies[None, :] / np.asarray(cutoffs)[:, None]) ** 4)
    return np.fft.irfft(spectrum[None, :] * gains, n=count, axis=1)


def _sweeping_filter(bands: np.ndarray, cutoffs: list[float], cutoff: np.ndarray) -> np.ndarray:
    """Noise whose low-pass cutoff follows `cutoff` (per sample): a cross-fade between the
    fixed bands (filtered at `cutoffs`, ascending), linear in log-frequency."""
    position = np.interp(np.log(cutoff), np.log(cutoffs), np.arange(len(cutoffs)))
    weights = np.clip(1 - np.abs(position[None, :] - np.arange(len(cutoffs))[:, None]), 0, 1)
    return (bands * weights).sum(axis=0)


def _convolve(impulses: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Linear (not circular) convolution by FFT, cut to the length of `impulses`."""
    size = 1 << (len(impulses) + len(kernel) - 1).bit_length()  # a power of two: a fast FFT
    return np.fft.irfft(np.fft.rfft(impulses, n=size) * np.fft.rfft(kernel, n=size), n=size)[:len(impulses)]


def _envelope(t: np.ndarray, attack: float, decay: float) -> np.ndarray:
    """A quick linear attack into an exponential decay."""
    return np.minimum(t / attack, 1) * np.exp(-np.maximum(t - attack, 0) / decay)


def _tone(rng: np.random.Generator, t: np.ndarray, rate: int, words: Words) -> np.ndarray:
    if any(word in words for word in ("low", "deep", "bass", "hum")):
        frequency = rng.uniform(80, 180)
    elif any(word in words for word in ("high", "alarm", "whistle")):
        frequency = rng.uniform(900, 1800)
    else:
        frequency = 440 * 2 ** (int(rng.integers(-9, 10)) / 12)
    duration = t[-1] + 1 / rate
    phase = TAU * frequency * t
    wave_form = np.sin(phase) + 0.25 * np.sin(2 * phase) + 0.1 * np.sin(3 * phase)
    release = np.clip((duration - t) / min(0.08, duration / 3), 0, 1)
    return wave_form * np.minimum(t / 0.01, 1) * release


def _noise(rng: np.random.Generator, t: np.ndarray, rate: int, words: Words) -> np.ndarray:
    """Pink-ish noise (more energy low down, like most natural noise)."""
    spectrum = np.fft.rfft(rng.standard_normal(len(t)))
    spectrum /= np.sqrt(np.maximum(np.fft.rfftfreq(len(t), 1 / rate), 20))
    return np.fft.irfft(spectrum, n=len(t))


def _wind(rng: np.random.Generator, t: np.ndarray, rate: int, words: Words) -> np.ndarray:
    cutoffs = [250.0, 600.0, 1400.0]
    bands = _shaped_noise(rng, len(t), rate, cutoffs)
    bands /= bands.std(axis=1, keepdims=True) + 1e-9
    knots = rng.uniform(0, 1, int(t[-1] * 1.5) + 3)  # gusts: slow random swells
    gust = np.interp(t * 1.5, np.arange(len(knots)), knots)
    gust = gust * gust * (3 - 2 * gust)
    return _sweeping_filter(bands, cutoffs, 250 * (1400 / 250) ** gust) * (0.25 + 0.75 * gust)


def _rain(rng: np.random.Generator, t: np.ndarray, rate: int, words: Words) -> np.ndarray:
    hiss = _shaped_noise(rng, len(t), rate, [9000.0], highpass=1500)[0]
    drops = np.zeros(len(t))
    count = int(len(t) / rate * rng.uniform(25, 60)) + 1
    drops[rng.integers(0, len(t), count)] = rng.uniform(0.2, 1.0, count)
    kernel_t = np.arange(int(0.012 * rate)) / rate
    kernel = np.sin(TAU * rng.uniform(2500, 4500) * kernel_t) * np.exp(-kernel_t / 0.002)
    patter = _convolve(drops, kernel)
    return 0.35 * hiss / (hiss.std() + 1e-9) + patter / (np.abs(patter).max() + 1e-9)


def _explosion(rng: np.random.Generator, t: np.ndarray, rate: int, words: Words) -> np.ndarray:
    cutoffs = [90.0, 250.0, 700.0, 2000.0, 6000.0]
    bands = _shaped_noise(rng, len(t), rate, cutoffs)
    bands /= bands.std(axis=1, keepdims=True) + 1e-9
    cutoff = np.clip(6000 * np.exp(-t / rng.uniform(0.15, 0.3)), 90, 6000)
    rumble = _sweeping_filter(bands, cutoffs, cutoff) * _envelope(t, 0.004, rng.uniform(0.35, 0.7))
    thump_phase = TAU * np.cumsum(35 + 60 * np.exp(-t / 0.15)) / rate
    thump = np.sin(thump_phase) * _envelope(t, 0.003, 0.25)
    return rumble + 1.5 * thump


def _laser(rng: np.random.Generator, t: np.ndarray, rate: int, words: Words) -> np.ndarray:
    length = min(t[-1] + 1 / rate, rng.uniform(0.25, 0.45))
    start, end = rng.uniform(1600, 2800), rng.uniform(120, 320)
    frequency = start * (end / start) ** np.clip(t / length, 0, 1)
    phase = TAU * np.cumsum(frequency) / rate
    buzz = np.tanh(2.5 * np.sin(phase)) + 0.3 * np.sin(2 * phase)
    return buzz * _envelope(t, 0.003, length / 3) * (t < length)


def _coin(rng: np.random.Generator, t: np.ndarray, rate: int, words: Words) -> np.ndarray:
    shift = 2 ** (int(rng.integers(-3, 4)) / 12)
    first, second = 987.77 * shift, 1318.51 * shift  # B5 then E6: the classic pickup
    switch = rng.uniform(0.06, 0.09)
    frequency = np.where(t < switch, first, second)
    square = np.tanh(6 * np.sin(TAU * np.cumsum(frequency) / rate))
    return square * np.where(t < switch, 1.0, _envelope(t - switch, 0.002, 0.12))


SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10),
    "major pentatonic": (0, 2, 4, 7, 9), "minor pentatonic": (0, 3, 5, 7, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10), "mixolydian": (0, 2, 4, 5, 7, 9, 10),
}


def _jingle(rng: np.random.Generator, t: np.ndarray, rate: int, words: Words) -> np.ndarray:
    """A melody random-walking a scale (picked by the seed), in eighth notes with ADSR."""
    scale = SCALES[str(rng.choice(sorted(SCALES)))]
    root, beat = int(rng.integers(57, 65)), 60 / rng.uniform(100, 150)
    length = beat / 2
    count = int(t[-1] // length) + 1
    steps = rng.choice([-2, -1, -1, 1, 1, 2, 0, 3], count)
    degree = np.clip(np.cumsum(steps), -3, 9)
    degree[-1] = 0  # end on the root
    octave, index = np.divmod(degree, len(scale))
    midi = root + 12 * octave + np.asarray(scale)[index]
    rests = rng.random(count) < 0.12
    rests[[0, -1]] = False
    note = np.minimum((t // length).astype(np.intp), count - 1)
    local = t - note * length
    frequency = 440 * 2 ** ((midi[note] - 69) / 12)
    phase = TAU * frequency * local
    voice = np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.2 * np.sin(3 * phase)
    attack, decay, sustain = 0.01, 0.06, 0.6
    adsr = np.where(local < attack, local / attack,
                    np.maximum(sustain, 1 - (1 - sustain) * (local - attack) / decay))
    adsr *= np.clip((length - local) / (length * 0.3), 0, 1)  # release over the last 30%
    bass_phase = TAU * 440 * 2 ** ((root - 12 - 69) / 12) * (t % (beat * 4))
    bass = 0.35 * np.sin(bass_phase) * _envelope(t % (beat * 4), 0.01, beat)
    return voice * adsr * ~rests[note] + bass


def _footsteps(rng: np.random.Generator, t: np.ndarray, rate: int, words: Words) -> np.ndarray:
    """Steps at a walking pace, alternating feet: impulses convolved with a scuff and thud."""
    interval = rng.uniform(0.42, 0.6)
    times = np.arange(0.05, t[-1] + 1 / rate, interval)
    steps = np.zeros(len(t))
    steps[(times * rate).astype(np.intp)] = np.where(np.arange(len(times)) % 2 == 0, 1.0, 0.8)
    kernel_t = np.arange(int(0.15 * rate)) / rate
    scuff = _shaped_noise(rng, len(kernel_t), rate, [rng.uniform(700, 1400)])[0]
    kernel = scuff / (scuff.std() + 1e-9) * np.exp(-kernel_t / 0.025)
    kernel += 3 * np.sin(TAU * rng.uniform(60, 95) * kernel_t) * np.exp(-kernel_t / 0.04)
    return _convolve(steps, kernel)


def _click(rng: np.random.Generator, t: np.ndarray, rate: int, words: Words) -> np.ndarray:
    local = np.maximum(t - 0.005, 0)
    ping = np.sin(TAU * rng.uniform(1500, 3000) * local) * np.exp(-local / 0.004)
    snap = rng.standard_normal(len(t)) * np.exp(-local / 0.0015)
    return (ping + 0.5 * snap) * (t >= 0.005)


Sound = Callable[[np.random.Generator, np.ndarray, int, Words], np.ndarray]
SOUNDS: dict[str, Sound] = {
    "tone": _tone, "noise": _noise, "wind": _wind, "rain": _rain, "explosion": _explosion,
    "laser": _laser, "coin": _coin, "jingle": _jingle, "footsteps": _footsteps, "click": _click,
}
SOUND_WORDS: dict[str, str] = {
    **dict.fromkeys(("tone", "beep", "sine", "hum", "alarm", "whistle"), "tone"),
    **dict.fromkeys(("noise", "static", "hiss", "white", "pink"), "noise"),
    **dict.fromkeys(("wind", "breeze", "storm", "gust", "air"), "wind"),
    **dict.fromkeys(("rain", "drizzle", "shower", "drops"), "rain"),
    **dict.fromkeys(("explosion", "boom", "blast", "bomb", "thunder", "crash"), "explosion"),
    **dict.fromkeys(("laser", "zap", "blaster", "shot", "pew", "beam"), "laser"),
    **dict.fromkeys(("coin", "pickup", "collect", "reward", "bonus", "powerup"), "coin"),
    **dict.fromkeys(("jingle", "melody", "music", "song", "tune", "theme", "chime"), "jingle"),
    **dict.fromkeys(("footstep", "footsteps", "step", "steps", "walk", "walking"), "footsteps"),
    **dict.fromkeys(("click", "tick", "tap", "button", "ui"), "click"),
}


def _finish(signal: np.ndarray, rate: int) -> np.ndarray:
    """Centred, faded at both ends against clicks, normalised to PEAK; as int16."""
    signal = signal - signal.mean()
    fade = max(1, min(int(FADE_SECONDS * rate), len(signal) // 4))
    ramp = np.linspace(0, 1, fade, endpoint=False)
    signal[:fade] *= ramp
    signal[len(signal) - fade:] *= ramp[::-1]
    peak = np.abs(signal).max()
    if peak > 0:
        signal *= PEAK / peak
    return np.round(signal * 32767).astype("<i2")


def make_audio(words: Words, rng: np.random.Generator, duration: float, sample_rate: int,
               progress: Progress) -> tuple[bytes, dict[str, object]]:
    """A sound for the description: WAV bytes and what was chosen."""
    progress(10, "synthesising")
    kind = next((SOUND_WORDS[word] for word in words if word in SOUND_WORDS), "tone")
    count = max(1, round(duration * sample_rate))
    t = np.arange(count) / sample_rate
    signal = SOUNDS[kind](rng, t, sample_rate, words).astype(np.float64)
    progress(70, "normalising")
    samples = _finish(signal, sample_rate)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(sample_rate)
        writer.writeframes(samples.tobytes())
    progress(90, "encoded")
    return buffer.getvalue(), {"duration_s": count / sample_rate, "sample_rate": sample_rate,
                               "channels": 1, "sound": kind}
