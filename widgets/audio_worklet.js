// AudioWorkletProcessor "demon-loop": holds the whole loop as PCM and loops it.
//
// Messages in (port): {type: "patch", start, data: Float32Array[], fade, versions, id}
//                     {type: "play", playing}, {type: "volume", volume}
//                     {type: "read"}                   (tests) answered by {type: "loop", ...}
// Messages out:       {type: "applied", id}            after a patch is in the buffer
//                     {type: "status", ...}            about every 100 ms; `heard` holds the newest
//                                                      version per name, `advances` every advance since
//                                                      the last report ([name, version, time]), so a
//                                                      version overtaken within one report is not lost
//                     {type: "loop", data, filled}     a copy of the loop, after a read
//
// A patch is crossfaded in at its start sample: w(i) = sin^2(pi/2 * (i + 0.5) / F)
// over F samples at both edges, out = old * (1 - w) + new * w (samples never
// filled take the new PCM as is). The same formula runs in the kernel's mirror
// (demon_nb/live/player.py), so the buffer is always the mirror, bit for bit.
// A patch that arrives late (its region already holds the playhead) is also
// declicked on the output side: the next F samples played are
// old * (1 - w) + buffer * w, with `old` the samples as they were before the patch.
// Only what comes out of the speakers is faded; the buffer stays the mirror, so
// the kernel can aim its lead at the arrival (heard = arrival, no wait).
// While playing, the playhead never plays an
// unfilled sample if any sample is filled: it skips ahead to the next filled one
// (stale, never silent). With nothing filled it holds and counts silent samples.

const MAX_MARKERS = 64;

class DemonLoop extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = options.processorOptions;
    this.L = opts.loopSamples;
    this.C = opts.channels;
    this.buf = Array.from({ length: this.C }, () => new Float32Array(this.L));
    this.filled = new Uint8Array(this.L);
    this.filledCount = 0;
    this.pos = 0;
    this.playing = !!opts.playing;
    this.volume = opts.volume ?? 1;
    this.gain = this.volume;                 // smoothed towards volume per sample
    this.markers = [];                       // {start, len, versions}: heard-version probes
    this.heard = {};                         // name -> [version, audio-context time]
    this.advances = [];                      // [name, version, time] since the last report
    this.counts = { rendered: 0, silent: 0, skips: 0, gaps: 0, patches: 0, nonfinite: 0, declicks: 0 };
    this.sumsq = 0; this.peak = 0; this.n = 0;
    this.lastFrame = -1;
    this.reportEvery = Math.max(1, Math.round((opts.reportSeconds ?? 0.1) * sampleRate / 128));
    this.blocks = 0;
    this.declick = null;                     // {old: Float32Array[], k}: output fade after a late patch
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(m) {
    if (m.type === "patch") this.applyPatch(m);
    else if (m.type === "play") this.playing = !!m.playing;
    else if (m.type === "volume") this.volume = m.volume;
    else if (m.type === "read") {
      const data = this.buf.map((ch) => ch.slice());
      this.port.postMessage({ type: "loop", data, filled: this.filledCount }, data.map((ch) => ch.buffer));
    }
  }

  applyPatch({ start, data, fade, versions, id }) {
    const L = this.L, N = data[0].length, F = Math.min(fade | 0, N >> 1);
    start = ((start % L) + L) % L;
    this.keepOutputSmooth(start, N, F);
    for (let i = 0; i < N; i++) {
      const j = (start + i) % L;
      let w = 1;
      if (this.filled[j]) {
        if (i < F) w = Math.sin(0.5 * Math.PI * (i + 0.5) / F) ** 2;
        else if (i >= N - F) w = Math.sin(0.5 * Math.PI * (N - i - 0.5) / F) ** 2;
      } else {
        this.filled[j] = 1; this.filledCount++;
      }
      for (let c = 0; c < this.C; c++) {
        let v = data[Math.min(c, data.length - 1)][i];
        if (!Number.isFinite(v)) { v = 0; this.counts.nonfinite++; }
        const ch = this.buf[c];
        ch[j] = ch[j] * (1 - w) + v * w;
      }
    }
    this.counts.patches++;
    if (versions && Object.keys(versions).length) {
      this.markers.push({ start, len: N, versions });
      if (this.markers.length > MAX_MARKERS) this.markers.shift();
    }
    this.port.postMessage({ type: "applied", id });
  }

  // A late patch rewrites samples at the playhead: keep the next F samples as they were,
  // so process() fades the output from them into the new buffer (no step at the playhead).
  keepOutputSmooth(start, N, F) {
    const L = this.L, p = this.pos;
    if (!this.playing || F === 0 || !this.filled[p] || (p - start + L) % L >= N) return;
    const old = this.buf.map((ch) => {
      const o = new Float32Array(F);
      for (let k = 0; k < F; k++) o[k] = ch[(p + k) % L];
      return o;
    });
    if (this.declick) {                      // a fade in progress: start from what it would play
      const d = this.declick;
      for (let c = 0; c < this.C; c++) {
        for (let k = 0; d.k + k < d.old[c].length && k < F; k++) {
          const w = Math.sin(0.5 * Math.PI * (d.k + k + 0.5) / d.old[c].length) ** 2;
          old[c][k] = d.old[c][d.k + k] * (1 - w) + old[c][k] * w;
        }
      }
    }
    this.declick = { old, k: 0 };
    this.counts.declicks++;
  }

  // First offset in this block at which each pending marker's region is played.
  checkMarkers(n) {
    const L = this.L, p = this.pos;
    this.markers = this.markers.filter((m) => {
      const inside = (p - m.start + L) % L < m.len;
      const d = inside ? 0 : (m.start - p + L) % L;
      if (d >= n) return true;
      const t = currentTime + d / sampleRate;
      for (const [name, v] of Object.entries(m.versions)) {
        const prev = this.heard[name];
        if (!prev || v > prev[0]) {
          this.heard[name] = [v, t];
          if (this.advances.length < MAX_MARKERS) this.advances.push([name, v, t]);
        }
      }
      return false;
    });
  }

  nextFilled(from) {
    for (let k = 0; k < this.L; k++) {
      const j = (from + k) % this.L;
      if (this.filled[j]) return j;
    }
    return -1;
  }

  process(inputs, outputs) {
    const out = outputs[0];
    const n = out[0].length;
    if (this.lastFrame >= 0 && currentFrame - this.lastFrame > n) this.counts.gaps += currentFrame - this.lastFrame - n;
    this.lastFrame = currentFrame;
    if (this.playing) {
      if (this.filledCount > 0 && !this.filled[this.pos]) {
        this.pos = this.nextFilled(this.pos);
        this.counts.skips++;
        this.declick = null;
      }
      this.checkMarkers(n);
      for (let i = 0; i < n; i++) {
        this.gain += (this.volume - this.gain) * 0.002;
        if (this.filledCount === 0) { this.counts.silent++; continue; }
        if (!this.filled[this.pos]) {
          this.pos = this.nextFilled(this.pos); this.counts.skips++;
          this.declick = null;                 // the kept samples belonged to the old position
        }
        const d = this.declick;
        const w = d ? Math.sin(0.5 * Math.PI * (d.k + 0.5) / d.old[0].length) ** 2 : 1;
        for (let c = 0; c < out.length; c++) {
          const src = Math.min(c, this.C - 1);
          const b = this.buf[src][this.pos];
          const v = (d ? d.old[src][d.k] * (1 - w) + b * w : b) * this.gain;
          out[c][i] = v;
          if (c === 0) { this.sumsq += v * v; const a = Math.abs(v); if (a > this.peak) this.peak = a; }
        }
        this.n++;
        if (d && ++d.k >= d.old[0].length) this.declick = null;
        this.pos = (this.pos + 1) % this.L;
      }
      this.counts.rendered += n;
    }
    if (++this.blocks % this.reportEvery === 0) this.report();
    return true;
  }

  report() {
    this.port.postMessage({
      type: "status",
      playhead: this.pos,
      playing: this.playing,
      filled: this.filledCount / this.L,
      rms: this.n ? Math.sqrt(this.sumsq / this.n) : 0,
      peak: this.peak,
      heard: this.heard,
      advances: this.advances,
      ctxTime: currentTime,
      ...this.counts,
    });
    this.sumsq = 0; this.peak = 0; this.n = 0;
    this.advances = [];
  }
}

registerProcessor("demon-loop", DemonLoop);
