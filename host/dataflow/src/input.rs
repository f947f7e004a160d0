//! What flows on a channel, and the bookkeeping of a subtask's inputs: which
//! channels have ended, and the current watermark (the minimum over channels).
//!
//! Protocol, per consumer subtask with channels c₁…cₙ:
//! 1. Each channel carries data and control events in the order the producer sent them.
//! 2. `End` on a channel means its producer sent everything; the channel delivers nothing after it.
//! 3. The subtask's watermark is the minimum of the last watermark seen on each
//!    channel that has not ended (an ended channel no longer holds it back); it
//!    only advances, so a consumer never sees time go backwards.
//! 4. When every channel has ended the subtask's input has ended: an operator
//!    calls `finish`, a sink commits.
//! 5. `Barrier(k)` events go to the subtask's [`BarrierAligner`](crate::BarrierAligner),
//!    used side by side with this tracker (its protocol is in `barrier.rs`);
//!    `End` goes to both. While the aligner blocks a channel the subtask does
//!    not read it, so that channel's watermarks wait with its data; steps 1–4
//!    are unchanged, and the barrier protocol relies on step 2 (an ended
//!    channel delivers nothing, so it owes no barrier).

/// One message on a channel.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<B> {
    /// A batch of rows.
    Data(B),
    /// Event time has reached this value (milliseconds since the epoch) on this channel.
    Watermark(i64),
    /// Checkpoint barrier `n`.
    Barrier(u64),
    /// The producer finished.
    End,
}

/// What an input event means for the subtask as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputProgress {
    /// Nothing to do beyond handling the event itself.
    None,
    /// The subtask's watermark advanced to this value: forward it downstream.
    Watermark(i64),
    /// Every channel has ended.
    Ended,
}

/// Tracks a subtask's input channels.
#[derive(Debug, Clone)]
pub struct InputTracker {
    ended: Vec<bool>,
    watermarks: Vec<Option<i64>>,
    current: Option<i64>,
    open: usize,
}

impl InputTracker {
    pub fn new(channels: usize) -> Self {
        Self { ended: vec![false; channels], watermarks: vec![None; channels], current: None, open: channels }
    }

    pub fn channels(&self) -> usize {
        self.ended.len()
    }

    pub fn is_ended(&self) -> bool {
        self.open == 0
    }

    /// Records `End` on `channel`. Ending twice, or a channel out of range, is ignored.
    pub fn on_end(&mut self, channel: usize) -> InputProgress {
        match self.ended.get_mut(channel) {
            Some(e) if !*e => *e = true,
            _ => return InputProgress::None,
        }
        self.open -= 1;
        if self.open == 0 {
            return InputProgress::Ended;
        }
        self.advance()
    }

    /// Records a watermark on `channel`; returns the subtask's new watermark if it advanced.
    pub fn on_watermark(&mut self, channel: usize, watermark: i64) -> InputProgress {
        match self.watermarks.get_mut(channel) {
            Some(w) if !self.ended[channel] => *w = Some(w.map_or(watermark, |old| old.max(watermark))),
            _ => return InputProgress::None,
        }
        self.advance()
    }

    fn advance(&mut self) -> InputProgress {
        let mut min: Option<i64> = None;
        for (w, ended) in self.watermarks.iter().zip(&self.ended) {
            if *ended {
                continue;
            }
            match w {
                None => return InputProgress::None,
                Some(w) => min = Some(min.map_or(*w, |m: i64| m.min(*w))),
            }
        }
        match min {
            Some(m) if self.current.is_none_or(|c| m > c) => {
                self.current = Some(m);
                InputProgress::Watermark(m)
            }
            _ => InputProgress::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_when_every_channel_ended_once() {
        let mut t = InputTracker::new(2);
        assert_eq!(t.on_end(0), InputProgress::None);
        assert_eq!(t.on_end(0), InputProgress::None, "a repeated End is ignored");
        assert!(!t.is_ended());
        assert_eq!(t.on_end(1), InputProgress::Ended);
        assert!(t.is_ended());
        assert_eq!(t.on_end(7), InputProgress::None);
    }

    #[test]
    fn watermark_is_the_minimum_and_never_goes_back() {
        let mut t = InputTracker::new(2);
        assert_eq!(t.on_watermark(0, 10), InputProgress::None, "channel 1 has not spoken");
        assert_eq!(t.on_watermark(1, 5), InputProgress::Watermark(5));
        assert_eq!(t.on_watermark(1, 20), InputProgress::Watermark(10));
        assert_eq!(t.on_watermark(0, 3), InputProgress::None, "a late lower watermark changes nothing");
        assert_eq!(t.on_end(0), InputProgress::Watermark(20), "an ended channel stops holding time back");
    }
}
