//! Frame selection by time: which animation frame is showing at each sample
//! time `0, interval, 2 × interval, …`.
//!
//! Frame `i` shows from the sum of the delays before it until that sum plus
//! its own delay, so a frame with a delay of 0 shows for no time and is never
//! picked — except that an animation whose delays are all 0 (or a still
//! image) still yields its last frame at time 0. Samples stop at the end of
//! the animation (the sum of all delays); loops are not repeated.

/// How close to a frame boundary a sample time counts as on it.
const BOUNDARY_MS: f64 = 1e-6;

/// Walks an animation's frames in order and says which sample times each covers.
#[derive(Debug, Clone)]
pub struct Sampler {
    interval_ms: f64,
    /// The next sample's number: its time is `next × interval_ms`.
    next: u64,
    /// Where the frame being shown started, in milliseconds.
    start_ms: f64,
}

/// One extracted frame: sample number `sample` at `timestamp_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    pub sample: u64,
    pub timestamp_ms: i64,
}

impl Sampler {
    /// Samples every `interval_ms` (> 0) milliseconds, from time 0.
    pub fn new(interval_ms: f64) -> Self {
        debug_assert!(interval_ms > 0.0);
        Self { interval_ms, next: 0, start_ms: 0.0 }
    }

    /// The samples shown by the next frame, which lasts `delay_ms`.
    pub fn frame(&mut self, delay_ms: f64) -> impl Iterator<Item = Sample> + use<> {
        let end_ms = self.start_ms + delay_ms.max(0.0);
        let first = self.next;
        // The first sample at or after the frame's end. A sample within
        // `BOUNDARY_MS` of a boundary belongs to the frame starting there, so
        // float rounding in sums of fractional delays cannot move it.
        let last = (((end_ms - BOUNDARY_MS) / self.interval_ms).ceil().max(0.0) as u64).max(first);
        self.next = last;
        self.start_ms = end_ms;
        let interval_ms = self.interval_ms;
        (first..last).map(move |sample| Sample { sample, timestamp_ms: (sample as f64 * interval_ms).round() as i64 })
    }

    /// Whether any frame so far covered a sample.
    pub fn any(&self) -> bool {
        self.next > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which frame (by index) each sample picks, for frames of `delays`.
    fn pick(delays: &[f64], interval_ms: f64) -> Vec<(usize, i64)> {
        let mut s = Sampler::new(interval_ms);
        let mut picked = Vec::new();
        for (i, d) in delays.iter().enumerate() {
            picked.extend(s.frame(*d).map(|x| (i, x.timestamp_ms)));
        }
        picked
    }

    #[test]
    fn each_sample_takes_the_frame_showing_at_its_time() {
        // Frames show [0, 100), [100, 300), [300, 350), [350, 1000).
        let delays = [100.0, 200.0, 50.0, 650.0];
        assert_eq!(
            pick(&delays, 100.0),
            vec![(0, 0), (1, 100), (1, 200), (2, 300), (3, 400), (3, 500), (3, 600), (3, 700), (3, 800), (3, 900)]
        );
        assert_eq!(pick(&delays, 1000.0), vec![(0, 0)]);
        assert_eq!(pick(&delays, 320.0), vec![(0, 0), (2, 320), (3, 640), (3, 960)]);
    }

    #[test]
    fn a_sample_on_a_boundary_takes_the_frame_that_starts_there() {
        assert_eq!(pick(&[50.0, 50.0, 50.0], 50.0), vec![(0, 0), (1, 50), (2, 100)]);
    }

    #[test]
    fn zero_delay_frames_show_for_no_time() {
        assert_eq!(pick(&[0.0, 100.0, 0.0, 100.0], 50.0), vec![(1, 0), (1, 50), (3, 100), (3, 150)]);
        let mut s = Sampler::new(10.0);
        assert_eq!(s.frame(0.0).count(), 0);
        assert!(!s.any(), "the caller falls back to the last frame");
    }

    #[test]
    fn fractional_rates_round_timestamps_and_do_not_drift() {
        // 3 fps over a 10 s animation of 100 frames of 100 ms.
        let picked = pick(&[100.0; 100], 1000.0 / 3.0);
        assert_eq!(picked.len(), 30);
        assert_eq!(picked[1], (3, 333));
        assert_eq!(picked[2], (6, 667));
        assert_eq!(picked[29], (96, 9667));
        // Delays in 1/3 ms sum exactly enough to keep frame boundaries.
        assert_eq!(pick(&[100.0 / 3.0; 6], 100.0 / 3.0).len(), 6);
    }
}
