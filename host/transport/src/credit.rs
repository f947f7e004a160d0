//! Credit-based flow control of one channel, sans IO.
//!
//! The protocol, per channel (one QUIC stream; frames in `frame.rs`):
//!
//! 1. The receiver grants its whole window when it accepts the channel: `W`
//!    batches and `B` bytes (`TransportLimits::credit_batches`/`credit_bytes`).
//! 2. The sender may send a batch frame only while it holds at least one batch
//!    credit and a positive byte credit; sending spends one batch and the
//!    frame's length in bytes. Byte credit may go negative by one frame, so a
//!    batch larger than `B` (but within the frame limit) still moves once the
//!    window is empty, and nothing deadlocks.
//! 3. The receiver counts what it granted and not yet received; a batch frame
//!    arriving with no batch credit or no positive byte credit outstanding is a
//!    protocol violation that closes the connection.
//! 4. The receiver returns credit only when the application takes a batch
//!    (`recv`), in grants of at least half the window (fewer frames), or as
//!    soon as everything granted has been consumed.
//!
//! Correctness: by 2 and 3, at most `W` batches and `B + frame_bytes_max`
//! bytes of one channel are ever in flight or buffered, whatever the peer
//! does. No deadlock: if the sender is blocked, its outstanding credit is
//! spent (`W` batches or ≥ `B` bytes in flight); once the application has
//! consumed all of it the pending grant reaches the threshold of 4 and is sent.
//! A receiver that never calls `recv` grants nothing, so its producer waits:
//! that is the backpressure.

use crate::error::ProtocolError;
use crate::frame::Grant;

/// Largest batch credit a sender accepts to hold: a grant past it is a broken peer.
pub const CREDIT_BATCHES_MAX: u32 = 1 << 20;
/// Largest byte credit a sender accepts to hold.
pub const CREDIT_BYTES_MAX: u64 = 1 << 40;

/// The sender's side: credit in hand.
#[derive(Debug, Default)]
pub struct SendCredit {
    batches: u32,
    bytes: i64,
}

impl SendCredit {
    /// Whether a batch frame may go now.
    pub fn can_send(&self) -> bool {
        self.batches > 0 && self.bytes > 0
    }

    /// Spends credit for a batch frame of `len` bytes; the caller checked [`Self::can_send`].
    pub fn spend(&mut self, len: u32) {
        self.batches = self.batches.saturating_sub(1);
        self.bytes -= i64::from(len);
    }

    /// Adds a grant from the receiver.
    pub fn grant(&mut self, grant: Grant) -> Result<(), ProtocolError> {
        let batches = self.batches.checked_add(grant.batches).filter(|b| *b <= CREDIT_BATCHES_MAX);
        let bytes = i64::try_from(grant.bytes)
            .ok()
            .and_then(|g| self.bytes.checked_add(g))
            .filter(|b| *b <= CREDIT_BYTES_MAX as i64);
        match (batches, bytes) {
            (Some(batches), Some(bytes)) => {
                self.batches = batches;
                self.bytes = bytes;
                Ok(())
            }
            _ => Err(ProtocolError::CreditOverflow),
        }
    }

    /// Batch credits in hand.
    pub fn batches(&self) -> u32 {
        self.batches
    }
}

/// The receiver's side: what it granted, what arrived, what the application consumed.
#[derive(Debug)]
pub struct RecvCredit {
    window: Grant,
    outstanding_batches: u32,
    outstanding_bytes: i64,
    pending: Grant,
}

impl RecvCredit {
    /// A receiver with a window of `window`; returns it with the initial grant (the whole window).
    pub fn new(window: Grant) -> (Self, Grant) {
        let bytes = i64::try_from(window.bytes).unwrap_or(i64::MAX);
        (
            Self { window, outstanding_batches: window.batches, outstanding_bytes: bytes, pending: Grant::default() },
            window,
        )
    }

    /// A batch frame of `len` bytes arrived: it must have been covered by credit.
    pub fn on_batch(&mut self, len: u32) -> Result<(), ProtocolError> {
        if self.outstanding_batches == 0 || self.outstanding_bytes <= 0 {
            return Err(ProtocolError::CreditExceeded);
        }
        self.outstanding_batches -= 1;
        self.outstanding_bytes -= i64::from(len);
        Ok(())
    }

    /// The application took a batch of `len` bytes; returns a grant to send, if one is due.
    pub fn on_consumed(&mut self, len: u32) -> Option<Grant> {
        self.pending.batches += 1;
        self.pending.bytes += u64::from(len);
        let all_consumed = self.outstanding_batches == 0 || self.outstanding_bytes <= 0;
        let due =
            self.pending.batches >= self.window.batches.div_ceil(2) || self.pending.bytes >= self.window.bytes / 2;
        if !(due || all_consumed) {
            return None;
        }
        let grant = std::mem::take(&mut self.pending);
        self.outstanding_batches += grant.batches;
        self.outstanding_bytes += i64::try_from(grant.bytes).unwrap_or(i64::MAX);
        Some(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender that always sends when allowed and a receiver that consumes at
    /// its own pace never exceed the window and never stall.
    #[test]
    fn the_window_bounds_what_is_in_flight_and_never_stalls() {
        let window = Grant { batches: 4, bytes: 1000 };
        let (mut rx, initial) = RecvCredit::new(window);
        let mut tx = SendCredit::default();
        tx.grant(initial).expect("grant");
        let sizes = [100u32, 900, 3000, 1, 1, 1, 1, 1, 500, 500, 2000, 7];
        let mut in_flight: std::collections::VecDeque<u32> = Default::default();
        let mut sent = 0;
        let mut consumed = 0;
        while consumed < sizes.len() {
            if sent < sizes.len() && tx.can_send() {
                tx.spend(sizes[sent]);
                rx.on_batch(sizes[sent]).expect("within credit");
                in_flight.push_back(sizes[sent]);
                sent += 1;
                assert!(in_flight.len() <= 4);
                assert!(in_flight.iter().map(|l| u64::from(*l)).sum::<u64>() <= 1000 + 3000);
            } else {
                let len = in_flight.pop_front().expect("a stall: nothing in flight and no credit");
                consumed += 1;
                if let Some(g) = rx.on_consumed(len) {
                    tx.grant(g).expect("grant");
                }
            }
        }
    }

    #[test]
    fn a_sender_past_its_credit_is_refused() {
        let (mut rx, _) = RecvCredit::new(Grant { batches: 1, bytes: 10 });
        rx.on_batch(5).expect("credited");
        assert_eq!(rx.on_batch(5), Err(ProtocolError::CreditExceeded));
        let mut tx = SendCredit::default();
        assert_eq!(tx.grant(Grant { batches: u32::MAX, bytes: 1 }), Err(ProtocolError::CreditOverflow));
    }
}
