// AudioWorklet of the page's live mode: the microphone's samples (any rate, any channel count) as 16-bit
// little-endian mono PCM at 24 kHz, posted to the page in chunks of about 100 ms (an ArrayBuffer each).
// When the AudioContext already runs at 24 kHz the samples pass through; otherwise they are resampled
// here: averaged over each output sample's span when downsampling (a cheap low-pass against aliasing),
// interpolated linearly when upsampling.
"use strict";

class PcmWorklet extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const { targetRate = 24000, chunkMs = 100 } = options?.processorOptions || {};
    this.step = sampleRate / targetRate; // input samples per output sample
    this.chunk = new Int16Array(Math.round((targetRate * chunkMs) / 1000));
    this.filled = 0;
    this.position = 0; // where the next output sample starts, in input samples from the current block
    this.previous = 0; // the last input sample of the previous block (for interpolation)
    this.sum = 0; // downsampling: the span of the output sample in progress
    this.count = 0;
    this.port.onmessage = (event) => {
      if (event.data === "flush") {
        this.post();
        this.port.postMessage("flushed");
      }
    };
  }

  process(inputs) {
    const channels = inputs[0];
    if (channels && channels.length) this.take(this.mono(channels));
    return true;
  }

  mono(channels) {
    if (channels.length === 1) return channels[0];
    const mixed = new Float32Array(channels[0].length);
    for (const channel of channels) for (let i = 0; i < mixed.length; i += 1) mixed[i] += channel[i];
    for (let i = 0; i < mixed.length; i += 1) mixed[i] /= channels.length;
    return mixed;
  }

  take(samples) {
    if (this.step === 1) {
      for (const sample of samples) this.emit(sample);
    } else if (this.step > 1) {
      for (let i = 0; i < samples.length; i += 1) {
        this.sum += samples[i];
        this.count += 1;
        if (i + 1 >= this.position + this.step) { // the output sample's span ends here
          this.emit(this.sum / this.count);
          this.sum = 0;
          this.count = 0;
          this.position += this.step;
        }
      }
      this.position -= samples.length;
    } else {
      while (this.position < samples.length) {
        const index = Math.floor(this.position);
        const before = index === 0 ? this.previous : samples[index - 1];
        const after = samples[index];
        this.emit(before + (after - before) * (this.position - index));
        this.position += this.step;
      }
      this.position -= samples.length;
    }
    this.previous = samples[samples.length - 1];
  }

  emit(sample) {
    const clipped = Math.max(-1, Math.min(1, sample));
    this.chunk[this.filled] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    this.filled += 1;
    if (this.filled === this.chunk.length) this.post();
  }

  post() {
    if (!this.filled) return;
    // Int16Array is in the platform's byte order; every browser platform is little-endian.
    const buffer = this.chunk.slice(0, this.filled).buffer;
    this.filled = 0;
    this.port.postMessage(buffer, [buffer]);
  }
}

registerProcessor("pcm-worklet", PcmWorklet);
