// Gapless player for streamed pcm16: the page posts Int16 sample buffers, the worklet plays
// them back to back and reports how many samples it received and actually played.
class PcmPlayer extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = [];      // Float32Array chunks waiting to play
    this.offset = 0;      // read position in queue[0]
    this.received = 0;    // samples received since the last reset
    this.played = 0;      // samples that went to the output
    this.ended = false;   // no more audio will come for this utterance
    this.port.onmessage = (e) => {
      const m = e.data;
      if (m.type === "pcm") {
        const s16 = new Int16Array(m.buffer);
        const f32 = new Float32Array(s16.length);
        for (let i = 0; i < s16.length; i++) f32[i] = s16[i] / 32768;
        this.queue.push(f32);
        this.received += s16.length;
      } else if (m.type === "end") {
        this.ended = true;
      } else if (m.type === "reset") {
        this.queue = []; this.offset = 0; this.received = 0; this.played = 0; this.ended = false;
      }
    };
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    let i = 0;
    while (i < out.length && this.queue.length) {
      const head = this.queue[0];
      const n = Math.min(out.length - i, head.length - this.offset);
      out.set(head.subarray(this.offset, this.offset + n), i);
      i += n; this.offset += n; this.played += n;
      if (this.offset >= head.length) { this.queue.shift(); this.offset = 0; }
    }
    out.fill(0, i);   // underrun (or nothing to play): silence
    if (this.played && (this.played % 4800 < 128 || (this.ended && !this.queue.length))) {
      this.port.postMessage({received: this.received, played: this.played,
                             done: this.ended && !this.queue.length});
      if (this.ended && !this.queue.length) this.ended = false;
    }
    return true;
  }
}

registerProcessor("pcm-player", PcmPlayer);
