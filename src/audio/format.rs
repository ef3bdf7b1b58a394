//! A track's audio format, fixed by the first socket that opens the track.

use std::fmt;
use std::str::FromStr;

use crate::domain::InvalidValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    S16le,
    F32le,
}

impl SampleFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            SampleFormat::S16le => "s16le",
            SampleFormat::F32le => "f32le",
        }
    }

    pub fn bytes_per_sample(self) -> u16 {
        match self {
            SampleFormat::S16le => 2,
            SampleFormat::F32le => 4,
        }
    }
}

impl FromStr for SampleFormat {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, InvalidValue> {
        match text {
            "s16le" => Ok(SampleFormat::S16le),
            "f32le" => Ok(SampleFormat::F32le),
            _ => Err(InvalidValue::new("sample format", text)),
        }
    }
}

impl fmt::Display for SampleFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AudioFormat {
    pub sample_rate: u32,
    pub channels: u16,
    pub sample: SampleFormat,
}

impl AudioFormat {
    pub const SAMPLE_RATES: std::ops::RangeInclusive<u32> = 8000..=192_000;
    pub const CHANNELS: std::ops::RangeInclusive<u16> = 1..=8;

    /// The format of a new track when the socket names none.
    pub const DEFAULT: AudioFormat = AudioFormat {
        sample_rate: 48_000,
        channels: 1,
        sample: SampleFormat::S16le,
    };

    /// A format only exists within the contract's ranges.
    pub fn new(sample_rate: u32, channels: u16, sample: SampleFormat) -> Option<AudioFormat> {
        (Self::SAMPLE_RATES.contains(&sample_rate) && Self::CHANNELS.contains(&channels)).then_some(
            AudioFormat {
                sample_rate,
                channels,
                sample,
            },
        )
    }

    /// Bytes of one sample frame across all channels: offsets and payloads are multiples of it.
    pub fn block_size(&self) -> u64 {
        u64::from(self.channels) * u64::from(self.sample.bytes_per_sample())
    }

    pub fn bytes_per_second(&self) -> u64 {
        self.block_size() * u64::from(self.sample_rate)
    }

    /// Whole milliseconds of audio in `data_bytes`, rounded down.
    pub fn duration_ms(&self, data_bytes: u64) -> u64 {
        let frames = data_bytes / self.block_size();
        frames * 1000 / u64::from(self.sample_rate)
    }
}

/// The format a socket asked for; each part left out takes the track's (or the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestedFormat {
    pub sample_rate: Option<u32>,
    pub channels: Option<u16>,
    pub sample: Option<SampleFormat>,
}

impl RequestedFormat {
    pub fn resolve(self, base: AudioFormat) -> AudioFormat {
        AudioFormat {
            sample_rate: self.sample_rate.unwrap_or(base.sample_rate),
            channels: self.channels.unwrap_or(base.channels),
            sample: self.sample.unwrap_or(base.sample),
        }
    }
}
