//! The wire format of a stream, sans IO: a 5-byte header (kind, big-endian
//! `u32` length) and a payload, every length checked against its kind's limit
//! before a byte of the payload is read or allocated.

use crate::error::ProtocolError;

/// Ceiling on one frame's payload: 64 MiB. A peer announcing more is refused
/// before anything is allocated (the threat: one header making a node buffer
/// gigabytes). `TransportLimits::frame_bytes_max` may lower it, not raise it.
pub const FRAME_BYTES_MAX: u32 = 64 << 20;
/// Largest control message (its version byte included): control messages are
/// small, so a big one is a broken or hostile peer.
pub const CONTROL_FRAME_BYTES_MAX: u32 = 64 << 10;
/// Bytes in a frame header.
pub const HEADER_BYTES: usize = 5;

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// First frame of a data stream: the channel id (`u64`, big-endian).
    OpenChannel = 1,
    /// The Arrow IPC schema message of the channel (once, before any batch).
    Schema = 2,
    /// One Arrow IPC record batch message; spends one batch credit.
    Batch = 3,
    /// The sender finished the channel; nothing follows.
    End = 4,
    /// Receiver to sender: more credit (`u32` batches, `u64` bytes, big-endian).
    Credit = 5,
    /// A control message: a version byte, then the message.
    Control = 6,
    /// In-band on a data channel, between batches: a watermark or a
    /// checkpoint barrier ([`Marker`], 9 bytes). Spends no credit: it is read
    /// in turn with the batches, so the stream's own flow control bounds it.
    Marker = 7,
}

impl FrameKind {
    fn from_byte(byte: u8) -> Result<Self, ProtocolError> {
        Ok(match byte {
            1 => Self::OpenChannel,
            2 => Self::Schema,
            3 => Self::Batch,
            4 => Self::End,
            5 => Self::Credit,
            6 => Self::Control,
            7 => Self::Marker,
            other => return Err(ProtocolError::UnknownFrameKind { kind: other }),
        })
    }

    /// The largest payload a frame of this kind may carry.
    fn payload_max(self, frame_bytes_max: u32) -> u32 {
        match self {
            Self::OpenChannel => 8,
            Self::End => 0,
            Self::Credit => 12,
            Self::Marker => 9,
            Self::Control => CONTROL_FRAME_BYTES_MAX,
            Self::Schema | Self::Batch => frame_bytes_max.min(FRAME_BYTES_MAX),
        }
    }
}

/// A parsed, length-checked frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub kind: FrameKind,
    pub len: u32,
}

impl FrameHeader {
    /// Parses a header, refusing unknown kinds and lengths past the kind's limit.
    pub fn parse(bytes: [u8; HEADER_BYTES], frame_bytes_max: u32) -> Result<Self, ProtocolError> {
        let kind = FrameKind::from_byte(bytes[0])?;
        let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let max = kind.payload_max(frame_bytes_max);
        if len > max {
            return Err(ProtocolError::FrameTooLarge { kind, len: u64::from(len), max });
        }
        Ok(Self { kind, len })
    }

    /// Encodes a header for a payload of `len` bytes, refusing one past the kind's limit.
    pub fn encode(kind: FrameKind, len: usize, frame_bytes_max: u32) -> Result<[u8; HEADER_BYTES], ProtocolError> {
        let max = kind.payload_max(frame_bytes_max);
        let len = u32::try_from(len).ok().filter(|l| *l <= max).ok_or(ProtocolError::FrameTooLarge {
            kind,
            len: len as u64,
            max,
        })?;
        let l = len.to_be_bytes();
        Ok([kind as u8, l[0], l[1], l[2], l[3]])
    }
}

/// Credit granted by a receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Grant {
    pub batches: u32,
    pub bytes: u64,
}

impl Grant {
    pub fn encode(self) -> [u8; 12] {
        let mut out = [0; 12];
        out[..4].copy_from_slice(&self.batches.to_be_bytes());
        out[4..].copy_from_slice(&self.bytes.to_be_bytes());
        out
    }

    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let (b, rest) =
            payload.split_first_chunk::<4>().ok_or(ProtocolError::BadPayload { kind: FrameKind::Credit })?;
        let bytes: [u8; 8] = rest.try_into().map_err(|_| ProtocolError::BadPayload { kind: FrameKind::Credit })?;
        Ok(Self { batches: u32::from_be_bytes(*b), bytes: u64::from_be_bytes(bytes) })
    }
}

/// What a [`FrameKind::Marker`] frame says, in the channel's order with its batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Marker {
    /// Event time reached this value (milliseconds since the epoch) on the channel.
    Watermark(i64),
    /// Checkpoint barrier `n`.
    Barrier(u64),
}

impl Marker {
    pub fn encode(self) -> [u8; 9] {
        let (tag, value) = match self {
            Self::Watermark(t) => (1u8, t.to_be_bytes()),
            Self::Barrier(n) => (2u8, n.to_be_bytes()),
        };
        let mut out = [0; 9];
        out[0] = tag;
        out[1..].copy_from_slice(&value);
        out
    }

    pub fn decode(payload: &[u8]) -> Result<Self, ProtocolError> {
        let bad = || ProtocolError::BadPayload { kind: FrameKind::Marker };
        let (tag, rest) = payload.split_first().ok_or_else(bad)?;
        let value: [u8; 8] = rest.try_into().map_err(|_| bad())?;
        match tag {
            1 => Ok(Self::Watermark(i64::from_be_bytes(value))),
            2 => Ok(Self::Barrier(u64::from_be_bytes(value))),
            _ => Err(bad()),
        }
    }
}

/// Decodes an `OpenChannel` payload.
pub fn decode_channel_id(payload: &[u8]) -> Result<u64, ProtocolError> {
    let id: [u8; 8] = payload.try_into().map_err(|_| ProtocolError::BadPayload { kind: FrameKind::OpenChannel })?;
    Ok(u64::from_be_bytes(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_checked_against_their_kind() {
        let h = FrameHeader::encode(FrameKind::Batch, 1000, FRAME_BYTES_MAX).expect("fits");
        assert_eq!(
            FrameHeader::parse(h, FRAME_BYTES_MAX).expect("parses"),
            FrameHeader { kind: FrameKind::Batch, len: 1000 }
        );
        let err = FrameHeader::parse([3, 0xff, 0xff, 0xff, 0xff], FRAME_BYTES_MAX).expect_err("oversized");
        assert!(err.to_string().contains("67108864"), "{err}");
        assert!(matches!(
            FrameHeader::parse([9, 0, 0, 0, 0], FRAME_BYTES_MAX),
            Err(ProtocolError::UnknownFrameKind { kind: 9 })
        ));
        assert!(FrameHeader::parse([4, 0, 0, 0, 1], FRAME_BYTES_MAX).is_err(), "an End frame carries nothing");
        assert!(FrameHeader::encode(FrameKind::Batch, 2000, 1000).is_err(), "a lowered limit holds");
        let g = Grant { batches: 7, bytes: 1 << 40 };
        assert_eq!(Grant::decode(&g.encode()).expect("decodes"), g);
        assert!(Grant::decode(&[0; 11]).is_err());
        for m in [Marker::Watermark(-5), Marker::Watermark(i64::MAX), Marker::Barrier(0), Marker::Barrier(u64::MAX)] {
            assert_eq!(Marker::decode(&m.encode()).expect("decodes"), m);
        }
        assert!(Marker::decode(&[3, 0, 0, 0, 0, 0, 0, 0, 0]).is_err(), "an unknown marker is refused");
        assert!(Marker::decode(&[1, 0]).is_err(), "a short marker is refused");
        assert!(FrameHeader::parse([7, 0, 0, 0, 10], FRAME_BYTES_MAX).is_err(), "a marker is 9 bytes");
    }
}
