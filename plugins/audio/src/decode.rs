//! Audio decoding without the host: a media source in, samples at the wanted
//! rate and channel count out. Containers and codecs are symphonia's (WAV
//! PCM, FLAC, Ogg Vorbis, MP3); conversion is [`Resample`].

use std::fmt;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;

use crate::resample::Resample;

/// What to make of a clip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    /// Output rate in Hz; `None` keeps the source's.
    pub sample_rate: Option<u32>,
    /// `true` averages all channels into one; `false` keeps them.
    pub mono: bool,
    /// Longest clip accepted, in seconds of source audio.
    pub max_seconds: u32,
}

/// A decoded, converted clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    pub sample_rate: u32,
    pub channels: u16,
    /// Interleaved samples in [-1, 1].
    pub samples: Vec<f32>,
    /// The source's length in milliseconds.
    pub duration_ms: i64,
}

/// Why a clip could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not a container or codec this operator reads.
    Unsupported(String),
    /// The bytes are damaged or not audio.
    Corrupt(String),
    /// Longer than the configured maximum.
    TooLong { max_seconds: u32 },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Unsupported(m) => write!(f, "unsupported audio: {m} (supported: WAV, FLAC, Ogg Vorbis, MP3)"),
            DecodeError::Corrupt(m) => write!(f, "cannot decode audio: {m}"),
            DecodeError::TooLong { max_seconds } => {
                write!(f, "audio is longer than `max_seconds` = {max_seconds}; raise it to accept longer clips")
            }
        }
    }
}

/// Most channels a source may have: more is not audio anyone records, and
/// each channel costs a resampler buffer.
pub const CHANNELS_MAX: usize = 64;

/// Decodes the first audio track of `source`, downmixes and resamples it as
/// `target` says, sample by sample as packets arrive (the source-rate audio
/// is never held whole). `hint` (file extension, media type) speeds probing.
pub fn decode(source: Box<dyn MediaSource + '_>, hint: &Hint, target: &Target) -> Result<Clip, DecodeError> {
    let stream = MediaSourceStream::new(source, Default::default());
    let mut format = symphonia::default::get_probe()
        .probe(hint, stream, FormatOptions::default(), MetadataOptions::default())
        .map_err(|e| match e {
            SymphoniaError::Unsupported(_) => DecodeError::Unsupported("not a known audio container".into()),
            other => DecodeError::Corrupt(other.to_string()),
        })?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| DecodeError::Unsupported("the file has no audio track".into()))?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| DecodeError::Unsupported("the audio track has no codec parameters".into()))?;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| DecodeError::Unsupported(format!("codec: {e}")))?;

    let mut sink: Option<Sink> = None;
    let (mut good_packets, mut bad_packets) = (0u64, 0u64);
    let mut interleaved: Vec<f32> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(SymphoniaError::ResetRequired) => {
                return Err(DecodeError::Unsupported("chained streams (the track list changes mid-file)".into()));
            }
            Err(e) => return Err(DecodeError::Corrupt(e.to_string())),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(buf) => buf,
            // A damaged packet is skipped, as players do; a file made mostly of them is refused below.
            Err(SymphoniaError::DecodeError(_)) | Err(SymphoniaError::IoError(_)) => {
                bad_packets += 1;
                continue;
            }
            Err(e) => return Err(DecodeError::Corrupt(e.to_string())),
        };
        good_packets += 1;
        if buf.frames() == 0 {
            continue;
        }
        let rate = buf.spec().rate();
        let channels = buf.spec().channels().count();
        let sink = match &mut sink {
            Some(s) => {
                if (s.rate, s.channels) != (rate, channels) {
                    return Err(DecodeError::Unsupported(format!(
                        "the stream changes from {} Hz × {} channels to {rate} Hz × {channels} mid-file",
                        s.rate, s.channels
                    )));
                }
                s
            }
            None => sink.insert(Sink::new(rate, channels, target)?),
        };
        buf.copy_to_vec_interleaved(&mut interleaved);
        sink.push(&interleaved)?;
    }
    if bad_packets > good_packets {
        return Err(DecodeError::Corrupt(format!(
            "{bad_packets} of {} packets are damaged",
            bad_packets + good_packets
        )));
    }
    let sink = sink.ok_or_else(|| DecodeError::Corrupt("no audio could be decoded".into()))?;
    sink.finish()
}

/// Where decoded frames go: the length check, the downmix, the resampler.
struct Sink {
    rate: u32,
    channels: usize,
    mono: bool,
    frames_max: u64,
    max_seconds: u32,
    resample: Resample,
    mixed: Vec<f32>,
}

impl Sink {
    fn new(rate: u32, channels: usize, target: &Target) -> Result<Self, DecodeError> {
        if rate == 0 || channels == 0 || channels > CHANNELS_MAX {
            return Err(DecodeError::Unsupported(format!("{rate} Hz × {channels} channels")));
        }
        let out_channels = if target.mono { 1 } else { channels };
        let resample =
            Resample::new(rate, target.sample_rate.unwrap_or(rate), out_channels).map_err(DecodeError::Unsupported)?;
        Ok(Self {
            rate,
            channels,
            mono: target.mono,
            frames_max: u64::from(target.max_seconds) * u64::from(rate),
            max_seconds: target.max_seconds,
            resample,
            mixed: Vec::new(),
        })
    }

    fn push(&mut self, interleaved: &[f32]) -> Result<(), DecodeError> {
        let frames = (interleaved.len() / self.channels) as u64;
        if self.resample.frames_in() + frames > self.frames_max {
            return Err(DecodeError::TooLong { max_seconds: self.max_seconds });
        }
        let r = if self.mono && self.channels > 1 {
            downmix(interleaved, self.channels, &mut self.mixed);
            self.resample.push(&self.mixed)
        } else {
            self.resample.push(interleaved)
        };
        r.map_err(DecodeError::Corrupt)
    }

    fn finish(self) -> Result<Clip, DecodeError> {
        let frames_in = self.resample.frames_in();
        let out_channels = if self.mono { 1 } else { self.channels };
        let sample_rate = self.resample.rate_out();
        let samples = self.resample.finish().map_err(DecodeError::Corrupt)?;
        Ok(Clip {
            sample_rate,
            channels: out_channels as u16,
            samples,
            duration_ms: (frames_in * 1000 / u64::from(self.rate)) as i64,
        })
    }
}

/// Averages each frame's `channels` interleaved samples into one, into `out`.
pub fn downmix(interleaved: &[f32], channels: usize, out: &mut Vec<f32>) {
    out.clear();
    let scale = 1.0 / channels as f32;
    out.extend(interleaved.chunks_exact(channels).map(|frame| frame.iter().sum::<f32>() * scale));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-bit PCM WAV file, written by hand (the format is 44 bytes of header).
    fn wav(rate: u32, channels: u16, frames: &[Vec<i16>]) -> Vec<u8> {
        let data_len = (frames.len() * channels as usize * 2) as u32;
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&(36 + data_len).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&channels.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * u32::from(channels) * 2).to_le_bytes());
        b.extend_from_slice(&(channels * 2).to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data_len.to_le_bytes());
        for f in frames {
            for s in f {
                b.extend_from_slice(&s.to_le_bytes());
            }
        }
        b
    }

    fn run(bytes: Vec<u8>, target: Target) -> Result<Clip, DecodeError> {
        decode(Box::new(std::io::Cursor::new(bytes)), &Hint::new(), &target)
    }

    const MONO_16K: Target = Target { sample_rate: Some(16_000), mono: true, max_seconds: 600 };

    #[test]
    fn downmix_averages_each_frame() {
        let mut out = Vec::new();
        downmix(&[1.0, 0.0, 0.5, 0.5, -1.0, 1.0], 2, &mut out);
        assert_eq!(out, vec![0.5, 0.5, 0.0]);
        downmix(&[0.3, 0.6, 0.9], 3, &mut out);
        assert!((out[0] - 0.6).abs() < 1e-6);
    }

    #[test]
    fn stereo_wav_becomes_mono_16k_with_its_pitch() {
        // 1 s of a 1 kHz sine at 44.1 kHz, the right channel at half amplitude.
        let frames: Vec<Vec<i16>> = (0..44_100)
            .map(|i| {
                let v = (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 44_100.0).sin();
                vec![(v * 16_000.0) as i16, (v * 8_000.0) as i16]
            })
            .collect();
        let clip = run(wav(44_100, 2, &frames), MONO_16K).unwrap();
        assert_eq!((clip.sample_rate, clip.channels, clip.duration_ms), (16_000, 1, 1000));
        assert_eq!(clip.samples.len(), 16_000);
        let crossings = clip.samples.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count();
        assert!((998..=1001).contains(&crossings), "{crossings}");
        // (16000 + 8000) / 2 / 32768 ≈ 0.366
        let peak = clip.samples.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!((0.34..0.39).contains(&peak), "{peak}");
    }

    #[test]
    fn source_rate_and_channels_are_kept_when_asked() {
        let frames: Vec<Vec<i16>> = (0..800).map(|i| vec![i as i16, -(i as i16), 7]).collect();
        let target = Target { sample_rate: None, mono: false, max_seconds: 600 };
        let clip = run(wav(8_000, 3, &frames), target).unwrap();
        assert_eq!((clip.sample_rate, clip.channels, clip.duration_ms), (8_000, 3, 100));
        assert_eq!(clip.samples.len(), 2400);
        assert_eq!(clip.samples[3 * 5 + 1], -5.0 / 32768.0);
    }

    #[test]
    fn a_clip_over_max_seconds_is_refused() {
        let frames = vec![vec![0i16]; 8_000 * 3];
        let err = run(wav(8_000, 1, &frames), Target { max_seconds: 2, ..MONO_16K }).unwrap_err();
        assert_eq!(err, DecodeError::TooLong { max_seconds: 2 });
        assert!(run(wav(8_000, 1, &frames), Target { max_seconds: 3, ..MONO_16K }).is_ok());
    }

    #[test]
    fn more_than_channels_max_is_refused() {
        assert!(Sink::new(8_000, CHANNELS_MAX, &MONO_16K).is_ok());
        let err = Sink::new(8_000, CHANNELS_MAX + 1, &MONO_16K).err().unwrap();
        assert_eq!(err, DecodeError::Unsupported("8000 Hz × 65 channels".into()));
    }

    #[test]
    fn garbage_and_truncated_headers_are_errors_not_panics() {
        let err = run(b"this is not audio at all, just text".repeat(40), MONO_16K).unwrap_err();
        assert!(matches!(err, DecodeError::Unsupported(_)), "{err:?}");
        assert!(err.to_string().contains("WAV, FLAC, Ogg Vorbis, MP3"));
        let mut cut = wav(8_000, 1, &vec![vec![0i16]; 100]);
        cut.truncate(30);
        assert!(run(cut, MONO_16K).is_err());
        assert!(run(Vec::new(), MONO_16K).is_err());
        // A header promising 13-bit samples.
        let mut odd = wav(8_000, 1, &vec![vec![0i16]; 100]);
        odd[34..36].copy_from_slice(&13u16.to_le_bytes());
        let err = run(odd, MONO_16K).unwrap_err();
        assert!(matches!(err, DecodeError::Corrupt(_)), "{err:?}");
        // A header promising a thousand channels.
        let mut many = wav(8_000, 1, &vec![vec![0i16]; 100]);
        many[22..24].copy_from_slice(&1000u16.to_le_bytes());
        assert!(run(many, MONO_16K).is_err());
    }
}
