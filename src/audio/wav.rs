//! The WAV header: building it for a data size, and finding the `data` chunk by walking the
//! chunks of a file whose size fields a crash may have left stale.

use std::io;

use super::{AudioFormat, SampleFormat};

const WAVE_FORMAT_PCM: u16 = 1;
const WAVE_FORMAT_IEEE_FLOAT: u16 = 3;
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;
/// The tail shared by the KSDATAFORMAT_SUBTYPE GUIDs; the first two bytes are the format tag.
const SUBFORMAT_GUID_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];

/// Where the audio lives in a WAV file and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub format: AudioFormat,
    /// File position of the first PCM byte; the data chunk's size field sits just before it.
    pub data_start: u64,
}

impl Layout {
    /// The layout of a file this server writes.
    pub fn of(format: AudioFormat) -> Layout {
        Layout {
            format,
            data_start: header_len(format),
        }
    }

    /// The most PCM bytes the file can hold: both size fields are 32 bits.
    pub fn max_data_bytes(&self) -> u64 {
        let by_riff = u64::from(u32::MAX) - (self.data_start - 8);
        let limit = by_riff.min(u64::from(u32::MAX));
        limit - limit % self.format.block_size()
    }

    /// The RIFF size field for a file holding `data_bytes` of audio.
    pub fn riff_size(&self, data_bytes: u64) -> u32 {
        (self.data_start - 8 + data_bytes) as u32
    }
}

fn fmt_chunk_len(format: AudioFormat) -> u32 {
    match (format.channels > 2, format.sample) {
        (true, _) => 40,
        (false, SampleFormat::S16le) => 16,
        (false, SampleFormat::F32le) => 18,
    }
}

/// Length of the header this server writes: RIFF + fmt chunk + data chunk header.
pub fn header_len(format: AudioFormat) -> u64 {
    12 + 8 + u64::from(fmt_chunk_len(format)) + 8
}

/// The full header for `data_bytes` of audio: plain PCM for s16le mono/stereo, IEEE float for
/// f32le, WAVE_FORMAT_EXTENSIBLE for more than two channels; the data chunk comes last.
pub fn header(format: AudioFormat, data_bytes: u64) -> Vec<u8> {
    let layout = Layout::of(format);
    let fmt_len = fmt_chunk_len(format);
    let bits = format.sample.bytes_per_sample() * 8;
    let tag = match format.sample {
        SampleFormat::S16le => WAVE_FORMAT_PCM,
        SampleFormat::F32le => WAVE_FORMAT_IEEE_FLOAT,
    };
    let mut out = Vec::with_capacity(layout.data_start as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&layout.riff_size(data_bytes).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&fmt_len.to_le_bytes());
    let outer_tag = if format.channels > 2 {
        WAVE_FORMAT_EXTENSIBLE
    } else {
        tag
    };
    out.extend_from_slice(&outer_tag.to_le_bytes());
    out.extend_from_slice(&format.channels.to_le_bytes());
    out.extend_from_slice(&format.sample_rate.to_le_bytes());
    out.extend_from_slice(&(format.bytes_per_second() as u32).to_le_bytes());
    out.extend_from_slice(&(format.block_size() as u16).to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    if fmt_len == 18 {
        out.extend_from_slice(&0u16.to_le_bytes());
    }
    if fmt_len == 40 {
        out.extend_from_slice(&22u16.to_le_bytes());
        out.extend_from_slice(&bits.to_le_bytes());
        out.extend_from_slice(&channel_mask(format.channels).to_le_bytes());
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&SUBFORMAT_GUID_TAIL);
    }
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data_bytes as u32).to_le_bytes());
    debug_assert_eq!(out.len() as u64, layout.data_start);
    out
}

/// Speaker positions for the first `channels` standard speakers.
fn channel_mask(channels: u16) -> u32 {
    (1u32 << channels) - 1
}

/// Reads the file's layout by walking its chunks up to `data`. `read_at` reads exactly into the
/// buffer at a position or fails; `file_len` bounds the walk so a garbage size cannot send it
/// anywhere.
pub fn read_layout(
    file_len: u64,
    mut read_at: impl FnMut(&mut [u8], u64) -> io::Result<()>,
) -> io::Result<Layout> {
    let mut riff = [0u8; 12];
    read_at(&mut riff, 0)?;
    if &riff[0..4] != b"RIFF" || &riff[8..12] != b"WAVE" {
        return Err(invalid("not a RIFF/WAVE file"));
    }
    let mut position = 12u64;
    let mut format = None;
    while position + 8 <= file_len {
        let mut chunk = [0u8; 8];
        read_at(&mut chunk, position)?;
        let size = u64::from(u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]));
        let body = position + 8;
        match &chunk[0..4] {
            b"data" => {
                let format = format.ok_or_else(|| invalid("data chunk before fmt chunk"))?;
                return Ok(Layout {
                    format,
                    data_start: body,
                });
            }
            b"fmt " => {
                if !(16..=64).contains(&size) || body + size > file_len {
                    return Err(invalid("fmt chunk of impossible size"));
                }
                let mut fmt = vec![0u8; size as usize];
                read_at(&mut fmt, body)?;
                format = Some(parse_fmt(&fmt)?);
            }
            _ => {}
        }
        position = body + size + (size & 1);
    }
    Err(invalid("no data chunk"))
}

fn parse_fmt(fmt: &[u8]) -> io::Result<AudioFormat> {
    let u16_at = |i: usize| u16::from_le_bytes([fmt[i], fmt[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([fmt[i], fmt[i + 1], fmt[i + 2], fmt[i + 3]]);
    let mut tag = u16_at(0);
    if tag == WAVE_FORMAT_EXTENSIBLE {
        if fmt.len() < 40 {
            return Err(invalid("short extensible fmt chunk"));
        }
        tag = u16_at(24);
    }
    let sample = match (tag, u16_at(14)) {
        (WAVE_FORMAT_PCM, 16) => SampleFormat::S16le,
        (WAVE_FORMAT_IEEE_FLOAT, 32) => SampleFormat::F32le,
        _ => return Err(invalid("unsupported sample format")),
    };
    let format = AudioFormat::new(u32_at(4), u16_at(2), sample)
        .ok_or_else(|| invalid("sample rate or channels out of range"))?;
    if u64::from(u16_at(12)) != format.block_size() {
        return Err(invalid("block align does not match the format"));
    }
    Ok(format)
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout_of(bytes: &[u8]) -> io::Result<Layout> {
        read_layout(bytes.len() as u64, |buf, pos| {
            let start = pos as usize;
            let end = start + buf.len();
            let src = bytes.get(start..end).ok_or_else(|| invalid("eof"))?;
            buf.copy_from_slice(src);
            Ok(())
        })
    }

    #[test]
    fn headers_round_trip_for_every_layout() {
        for (rate, channels, sample, len) in [
            (48_000, 1, SampleFormat::S16le, 44),
            (44_100, 2, SampleFormat::S16le, 44),
            (48_000, 1, SampleFormat::F32le, 46),
            (96_000, 6, SampleFormat::S16le, 68),
            (48_000, 8, SampleFormat::F32le, 68),
        ] {
            let format = AudioFormat::new(rate, channels, sample).unwrap();
            let bytes = header(format, 0);
            assert_eq!(bytes.len(), len);
            assert_eq!(layout_of(&bytes).unwrap(), Layout::of(format));
        }
    }

    #[test]
    fn hound_reads_our_headers() {
        for (channels, sample) in [
            (1, SampleFormat::S16le),
            (2, SampleFormat::F32le),
            (3, SampleFormat::S16le),
        ] {
            let format = AudioFormat::new(48_000, channels, sample).unwrap();
            let data = vec![0u8; format.block_size() as usize * 10];
            let mut file = header(format, data.len() as u64);
            file.extend_from_slice(&data);
            let reader = hound::WavReader::new(io::Cursor::new(file)).unwrap();
            assert_eq!(reader.spec().channels, channels);
            assert_eq!(reader.duration(), 10);
        }
    }

    #[test]
    fn garbage_never_panics() {
        assert!(layout_of(b"").is_err());
        assert!(layout_of(b"RIFF\0\0\0\0WAVEfmt \xff\xff\xff\xff").is_err());
        assert!(layout_of(b"RIFF\0\0\0\0WAVEdata\0\0\0\0").is_err());
    }
}
