//! Streaming sample-rate conversion: decoded frames go in as they come, the
//! whole converted clip comes out at the end, so the clip is never held at
//! its source rate.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler};

/// Input frames per resampler call: small enough to keep the buffers small,
/// large enough that the per-call cost vanishes.
const CHUNK_FRAMES: usize = 1024;

/// Converts interleaved `f32` frames from one rate to another with rubato's
/// FFT resampler (a fixed ratio, band-limited, no aliasing); passes them
/// through when the rates are equal.
pub struct Resample {
    fft: Option<Fft<f32>>,
    channels: usize,
    rate_in: u64,
    rate_out: u64,
    /// Input frames not yet handed to the resampler (interleaved).
    pending: Vec<f32>,
    /// Converted frames (interleaved).
    out: Vec<f32>,
    /// One call's worth of output.
    scratch: Vec<f32>,
    /// Output frames still to drop: the resampler's delay.
    delay_frames: usize,
    frames_in: u64,
}

impl Resample {
    pub fn new(rate_in: u32, rate_out: u32, channels: usize) -> Result<Self, String> {
        if rate_in == 0 || rate_out == 0 || channels == 0 {
            return Err(format!("cannot resample {channels} channels from {rate_in} Hz to {rate_out} Hz"));
        }
        let fft = if rate_in == rate_out {
            None
        } else {
            let fft = Fft::<f32>::new(rate_in as usize, rate_out as usize, CHUNK_FRAMES, channels, FixedSync::Input)
                .map_err(|e| format!("resampler: {e}"))?;
            Some(fft)
        };
        let (scratch, delay_frames) = match &fft {
            Some(f) => (vec![0.0; f.output_frames_max() * channels], f.output_delay()),
            None => (Vec::new(), 0),
        };
        Ok(Self {
            fft,
            channels,
            rate_in: u64::from(rate_in),
            rate_out: u64::from(rate_out),
            pending: Vec::new(),
            out: Vec::new(),
            scratch,
            delay_frames,
            frames_in: 0,
        })
    }

    /// The output rate in Hz.
    pub fn rate_out(&self) -> u32 {
        self.rate_out as u32
    }

    /// Frames handed in so far.
    pub fn frames_in(&self) -> u64 {
        self.frames_in
    }

    /// Adds interleaved frames (`frames.len()` a multiple of the channel count).
    pub fn push(&mut self, frames: &[f32]) -> Result<(), String> {
        debug_assert_eq!(frames.len() % self.channels, 0);
        self.frames_in += (frames.len() / self.channels) as u64;
        if self.fft.is_none() {
            self.out.extend_from_slice(frames);
            return Ok(());
        }
        self.pending.extend_from_slice(frames);
        let mut used = 0;
        while self.pending.len() - used >= CHUNK_FRAMES * self.channels {
            used += self.run(used, None)? * self.channels;
        }
        self.pending.drain(..used);
        Ok(())
    }

    /// The whole converted clip: `ceil(frames_in × rate_out / rate_in)`
    /// frames, interleaved, aligned with the input (the delay is removed).
    pub fn finish(mut self) -> Result<Vec<f32>, String> {
        if self.fft.is_none() {
            return Ok(self.out);
        }
        let expected = (self.frames_in * self.rate_out).div_ceil(self.rate_in) as usize;
        let left = self.pending.len() / self.channels;
        if left > 0 {
            self.run(0, Some(left))?;
        }
        self.pending.clear();
        // Silence pushes out what the resampler still holds.
        while self.out.len() / self.channels < expected {
            self.run(0, Some(0))?;
        }
        self.out.truncate(expected * self.channels);
        Ok(self.out)
    }

    /// One resampler call on `pending[offset..]`; returns the input frames used.
    fn run(&mut self, offset_samples: usize, partial: Option<usize>) -> Result<usize, String> {
        let Some(fft) = self.fft.as_mut() else { return Ok(0) };
        let ch = self.channels;
        let input = &self.pending[offset_samples..];
        let input = InterleavedSlice::new(input, ch, input.len() / ch).map_err(|e| format!("resampler: {e}"))?;
        let frames_out_max = self.scratch.len() / ch;
        let mut output =
            InterleavedSlice::new_mut(&mut self.scratch, ch, frames_out_max).map_err(|e| format!("resampler: {e}"))?;
        let indexing = partial.map(|n| Indexing::new().partial_len(n));
        let (used, made) =
            fft.process_into_buffer(&input, &mut output, indexing.as_ref()).map_err(|e| format!("resampler: {e}"))?;
        let skip = self.delay_frames.min(made);
        self.delay_frames -= skip;
        self.out.extend_from_slice(&self.scratch[skip * ch..made * ch]);
        Ok(used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f32, rate: u32, seconds: f32) -> Vec<f32> {
        let n = (rate as f32 * seconds) as usize;
        (0..n).map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin() * 0.5).collect()
    }

    /// Upward zero crossings: one per period of a clean sine.
    fn crossings(s: &[f32]) -> usize {
        s.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count()
    }

    #[test]
    fn keeps_length_and_pitch_when_pushed_in_uneven_pieces() {
        let input = sine(440.0, 44_100, 2.0);
        let mut r = Resample::new(44_100, 16_000, 1).unwrap();
        for piece in input.chunks(777) {
            r.push(piece).unwrap();
        }
        let out = r.finish().unwrap();
        assert_eq!(out.len(), 32_000);
        let c = crossings(&out);
        assert!((878..=882).contains(&c), "{c} crossings in 2 s of 440 Hz");
        // Aligned: the delay is gone, so the start is the sine's start, not silence.
        assert!(out[..40].iter().any(|v| v.abs() > 0.1));
        let peak = out.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!((0.45..0.55).contains(&peak), "amplitude kept: {peak}");
    }

    #[test]
    fn upsamples_interleaved_channels_independently() {
        let left = sine(100.0, 8_000, 1.0);
        let right = sine(300.0, 8_000, 1.0);
        let frames: Vec<f32> = left.iter().zip(&right).flat_map(|(l, r)| [*l, *r]).collect();
        let mut r = Resample::new(8_000, 22_050, 2).unwrap();
        r.push(&frames).unwrap();
        let out = r.finish().unwrap();
        assert_eq!(out.len(), 22_050 * 2);
        let l: Vec<f32> = out.iter().step_by(2).copied().collect();
        let rr: Vec<f32> = out.iter().skip(1).step_by(2).copied().collect();
        assert!((99..=101).contains(&crossings(&l)));
        assert!((299..=301).contains(&crossings(&rr)));
    }

    #[test]
    fn equal_rates_pass_through_and_short_clips_survive() {
        let mut same = Resample::new(16_000, 16_000, 1).unwrap();
        same.push(&[0.25, -0.25]).unwrap();
        assert_eq!(same.finish().unwrap(), vec![0.25, -0.25]);

        let mut short = Resample::new(48_000, 16_000, 1).unwrap();
        short.push(&[0.1; 30]).unwrap();
        assert_eq!(short.finish().unwrap().len(), 10);

        let empty = Resample::new(48_000, 16_000, 1).unwrap();
        assert!(empty.finish().unwrap().is_empty());
        assert!(Resample::new(0, 16_000, 1).is_err());
    }
}
