//! FLAC, streamed: PCM bytes in a track's format go in, FLAC frames come out one block at a
//! time (16-bit from `s16le`, 24-bit from `f32le`, clamped and rounded).

use std::io::{self, Write};

use flacenc::bitsink::MemSink;
use flacenc::component::{BitRepr, Stream, StreamInfo};
use flacenc::config;
use flacenc::error::{Verified, Verify};
use flacenc::source::{Fill, FrameBuf};

use super::{AudioFormat, SampleFormat};

/// Frames per FLAC block (the reference encoder's default).
const BLOCK_FRAMES: usize = 4096;
const SCALE_24: f32 = 8_388_608.0;

/// Bits per sample of the FLAC made from a track of `sample` format.
pub fn bits_per_sample(sample: SampleFormat) -> usize {
    match sample {
        SampleFormat::S16le => 16,
        SampleFormat::F32le => 24,
    }
}

/// A FLAC stream of `total_frames` frames written to `inner` as PCM bytes arrive. The header
/// is written first, so it carries no MD5 (all zeros: "not computed", as the format allows);
/// each block is encoded once it is full, the last one by [`FlacWriter::finish`].
pub struct FlacWriter<W: Write> {
    inner: W,
    sample: SampleFormat,
    channels: usize,
    /// The encoder's settings, best first; the last writes verbatim subframes.
    configs: Vec<Verified<config::Encoder>>,
    info: StreamInfo,
    framebuf: FrameBuf,
    /// Interleaved samples of the block being filled.
    pending: Vec<i32>,
    /// Bytes of a sample cut between two writes.
    partial: Vec<u8>,
    frame_number: usize,
    sink: MemSink<u8>,
}

fn encoding_error(error: impl std::fmt::Debug) -> io::Error {
    io::Error::other(format!("FLAC encoding failed: {error:?}"))
}

impl<W: Write> FlacWriter<W> {
    pub fn new(mut inner: W, format: AudioFormat, total_frames: u64) -> io::Result<Self> {
        let channels = usize::from(format.channels);
        let bits = bits_per_sample(format.sample);
        let mut info =
            StreamInfo::new(format.sample_rate as usize, channels, bits).map_err(encoding_error)?;
        info.set_block_sizes(BLOCK_FRAMES, BLOCK_FRAMES)
            .map_err(encoding_error)?;
        // Zero: unknown, since the header goes out before any frame exists.
        info.set_frame_sizes(0, 0).map_err(encoding_error)?;
        info.set_total_samples(total_frames as usize);
        let mut sink = MemSink::<u8>::new();
        Stream::with_stream_info(info.clone())
            .write(&mut sink)
            .map_err(encoding_error)?;
        inner.write_all(sink.as_slice())?;
        sink.clear();
        let best = config::Encoder::default();
        let mut fixed = best.clone();
        fixed.subframe_coding.use_lpc = false;
        let mut verbatim = fixed.clone();
        verbatim.subframe_coding.use_fixed = false;
        let configs = [best, fixed, verbatim]
            .into_iter()
            .map(|config| config.into_verified().map_err(encoding_error))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(FlacWriter {
            inner,
            sample: format.sample,
            channels,
            configs,
            info,
            framebuf: FrameBuf::with_size(channels, BLOCK_FRAMES).map_err(encoding_error)?,
            pending: Vec::with_capacity(BLOCK_FRAMES * channels),
            partial: Vec::new(),
            frame_number: 0,
            sink,
        })
    }

    /// Takes one sample; a full block is encoded at once.
    fn push_sample(&mut self, bytes: &[u8]) -> io::Result<()> {
        let value = match self.sample {
            SampleFormat::S16le => i32::from(i16::from_le_bytes([bytes[0], bytes[1]])),
            SampleFormat::F32le => {
                let value = f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                let value = if value.is_nan() { 0.0 } else { value };
                (value * SCALE_24).round().clamp(-SCALE_24, SCALE_24 - 1.0) as i32
            }
        };
        self.pending.push(value);
        if self.pending.len() == BLOCK_FRAMES * self.channels {
            self.encode_block()?;
        }
        Ok(())
    }

    fn encode_block(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.framebuf
            .fill_interleaved(&self.pending)
            .map_err(encoding_error)?;
        // flacenc 0.5 can make an absurd frame (gigabytes) for a block where silence turns
        // into sound; a frame larger than the samples written plainly is encoded again with
        // simpler predictors, down to verbatim subframes, which are always right.
        let plain_bits = self.pending.len() * bits_per_sample(self.sample) + 1024;
        let mut encoded = None;
        for config in &self.configs {
            let frame = flacenc::encode_fixed_size_frame(
                config,
                &self.framebuf,
                self.frame_number,
                &self.info,
            )
            .map_err(encoding_error)?;
            if frame.count_bits() <= plain_bits {
                encoded = Some(frame);
                break;
            }
        }
        let frame = encoded.ok_or_else(|| encoding_error("no encoding fits the block"))?;
        frame.write(&mut self.sink).map_err(encoding_error)?;
        self.inner.write_all(self.sink.as_slice())?;
        self.sink.clear();
        self.pending.clear();
        self.frame_number += 1;
        Ok(())
    }

    /// Encodes the last, shorter block and hands back the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        // Whole frames only: a torn frame's samples are dropped.
        let whole = self.pending.len() - self.pending.len() % self.channels;
        self.pending.truncate(whole);
        self.encode_block()?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for FlacWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let width = usize::from(self.sample.bytes_per_sample());
        let mut rest = bytes;
        if !self.partial.is_empty() {
            let take = (width - self.partial.len()).min(rest.len());
            self.partial.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.partial.len() < width {
                return Ok(bytes.len());
            }
            let sample = std::mem::take(&mut self.partial);
            self.push_sample(&sample)?;
        }
        let mut chunks = rest.chunks_exact(width);
        for sample in &mut chunks {
            self.push_sample(sample)?;
        }
        self.partial.extend_from_slice(chunks.remainder());
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// flacenc's best settings made a 1.3 GB frame of this block (silence turning into noise).
    #[test]
    fn a_block_where_silence_turns_into_noise_stays_small_and_decodes() {
        let format = AudioFormat::new(44_100, 2, SampleFormat::F32le).unwrap();
        let mut state = 7u64;
        let mut samples = vec![0f32; 7563 * 2];
        samples.extend((0..40_000).map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            f32::from((state >> 48) as u16 as i16) / 32768.0
        }));
        let bytes: Vec<u8> = samples.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut writer = FlacWriter::new(Vec::new(), format, 27_563).unwrap();
        // Writes that cut samples apart, as a stream may.
        for chunk in bytes.chunks(16_387) {
            writer.write_all(chunk).unwrap();
        }
        let out = writer.finish().unwrap();
        assert!(out.len() < bytes.len(), "{} bytes", out.len());
        let mut reader = claxon::FlacReader::new(io::Cursor::new(out)).unwrap();
        assert_eq!(reader.streaminfo().samples, Some(27_563));
        let decoded: Vec<i32> = reader.samples().map(Result::unwrap).collect();
        let expected: Vec<i32> = samples.iter().map(|v| (v * SCALE_24) as i32).collect();
        assert_eq!(decoded, expected);
    }
}
