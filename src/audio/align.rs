//! One timeline: where each sample of a track sits on the server's clock (from its marks, or
//! from its segments where it has none), and the track rendered onto the session's common span:
//! silence where it captured nothing, resampled where its clock ran fast or slow. Everything
//! streams: a track is read, resampled and handed on a chunk at a time, never held whole.
//! Everything here blocks: callers run it on blocking threads.

use std::io::{self, Write};

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Adjustable, Async, FixedAsync, Resampler, SincInterpolationParameters, SincInterpolationType,
    WindowFunction,
};

use super::store::Snapshot;
use super::{wav, AudioFormat, SampleFormat};
use crate::db::marks::Mark;

/// Between two marks a track's clock may run off the nominal rate by at most this much and still
/// be one run of audio (sound cards are off by well under 0.1 %); more is a break: a crash, a
/// reload, a closed tab, after which the audio resumes at the later mark.
const MAX_DRIFT: f64 = 0.01;
/// A run whose every mark lands within this of where plain copying puts it is copied sample for
/// sample rather than resampled (ms).
const COPY_TOLERANCE_MS: f64 = 0.25;
/// Frames read from the file at a time.
const READ_FRAMES: u64 = 16 * 1024;
/// Frames the resampler makes per call.
const RESAMPLER_CHUNK: usize = 1024;
/// The resampler's ratio may stray this far from 1 (a break is declared long before).
const MAX_RATIO: f64 = 1.05;

/// A point of a track's timeline: the sample frame `frame` was captured at `at` (ms since the
/// Unix epoch, on the server's clock).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Anchor {
    frame: u64,
    at: f64,
}

/// A run of a track captured without a break: frames `anchors[0].frame..last.frame`, timed
/// linearly between its anchors.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    anchors: Vec<Anchor>,
}

impl Run {
    fn first(&self) -> Anchor {
        self.anchors[0]
    }

    fn last(&self) -> Anchor {
        self.anchors[self.anchors.len() - 1]
    }
}

/// A track's timeline: its runs of audio in order, each placed on the server's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    format: AudioFormat,
    runs: Vec<Run>,
}

impl Timeline {
    /// The timeline of `data_bytes` of audio: by its marks where it has any (those within the
    /// data), else by its segments (`(offset, startedAt in ms)`), else starting at `fallback_ms`.
    pub fn of_track(
        format: AudioFormat,
        data_bytes: u64,
        marks: &[Mark],
        segments: &[(u64, f64)],
        fallback_ms: f64,
    ) -> Timeline {
        let block = format.block_size();
        let frames = data_bytes / block;
        let anchors: Vec<Anchor> = marks
            .iter()
            .filter(|mark| mark.offset / block <= frames && mark.captured_at.is_finite())
            .map(|mark| Anchor {
                frame: mark.offset / block,
                at: mark.captured_at,
            })
            .collect();
        let runs = if !anchors.is_empty() {
            runs_from_marks(format, frames, &anchors)
        } else if !segments.is_empty() {
            runs_from_segments(format, frames, segments)
        } else {
            runs_from_segments(format, frames, &[(0, fallback_ms)])
        };
        Timeline {
            format,
            runs: runs
                .into_iter()
                .filter(|run| run.last().frame > run.first().frame)
                .collect(),
        }
    }

    /// When its first captured sample was captured; `None` for a track without audio.
    pub fn start(&self) -> Option<f64> {
        self.runs.first().map(|run| run.first().at)
    }

    /// When its last captured sample ended.
    pub fn end(&self) -> Option<f64> {
        self.runs.last().map(|run| run.last().at)
    }
}

fn ms_per_frame(format: AudioFormat) -> f64 {
    1000.0 / f64::from(format.sample_rate)
}

/// Marks as runs: linear between two marks, at the nominal rate before the first and after the
/// last; two marks whose times disagree with the audio between them by more than [`MAX_DRIFT`]
/// end a run, the earlier one's audio going on at the nominal rate.
fn runs_from_marks(format: AudioFormat, frames: u64, anchors: &[Anchor]) -> Vec<Run> {
    let per_frame = ms_per_frame(format);
    let nominal_after = |from: Anchor, frame: u64| Anchor {
        frame,
        at: from.at + (frame - from.frame) as f64 * per_frame,
    };
    let first = anchors[0];
    let mut current = Vec::new();
    if first.frame > 0 {
        current.push(Anchor {
            frame: 0,
            at: first.at - first.frame as f64 * per_frame,
        });
    }
    current.push(first);
    let mut runs = Vec::new();
    for pair in anchors.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let nominal = (b.frame - a.frame) as f64 * per_frame;
        let taken = b.at - a.at;
        if (taken - nominal).abs() <= MAX_DRIFT * nominal {
            current.push(b);
        } else {
            current.push(nominal_after(a, b.frame));
            runs.push(Run {
                anchors: std::mem::take(&mut current),
            });
            current.push(b);
        }
    }
    let last = anchors[anchors.len() - 1];
    if last.frame < frames {
        current.push(nominal_after(last, frames));
    }
    runs.push(Run { anchors: current });
    runs
}

/// Segments as runs: each socket's audio at the nominal rate from when it attached.
fn runs_from_segments(format: AudioFormat, frames: u64, segments: &[(u64, f64)]) -> Vec<Run> {
    let per_frame = ms_per_frame(format);
    let block = format.block_size();
    let mut sorted: Vec<(u64, f64)> = segments
        .iter()
        .map(|&(offset, at)| ((offset / block).min(frames), at))
        .collect();
    sorted.sort_by_key(|&(frame, _)| frame);
    let mut runs = Vec::new();
    for (index, &(frame, at)) in sorted.iter().enumerate() {
        // Audio before the first segment (none, in what this server stores) leads into it.
        let (start, at) = if index == 0 {
            (0, at - frame as f64 * per_frame)
        } else {
            (frame, at)
        };
        let end = sorted.get(index + 1).map_or(frames, |&(next, _)| next);
        if end > start {
            runs.push(Run {
                anchors: vec![
                    Anchor { frame: start, at },
                    Anchor {
                        frame: end,
                        at: at + (end - start) as f64 * per_frame,
                    },
                ],
            });
        }
    }
    runs
}

/// The session's common span: from its earliest captured sample to its latest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    pub start_ms: f64,
    pub end_ms: f64,
}

impl Span {
    /// The span of these timelines; `None` if none holds audio.
    pub fn of<'a>(timelines: impl IntoIterator<Item = &'a Timeline>) -> Option<Span> {
        let mut span: Option<Span> = None;
        for timeline in timelines {
            if let (Some(start), Some(end)) = (timeline.start(), timeline.end()) {
                span = Some(match span {
                    None => Span {
                        start_ms: start,
                        end_ms: end,
                    },
                    Some(span) => Span {
                        start_ms: span.start_ms.min(start),
                        end_ms: span.end_ms.max(end),
                    },
                });
            }
        }
        span
    }

    /// How many frames of `format` the aligned track holds.
    pub fn frames(&self, format: AudioFormat) -> u64 {
        let frames = (self.end_ms - self.start_ms) * f64::from(format.sample_rate) / 1000.0;
        frames.round().max(0.0) as u64
    }

    /// Where time `at` falls, in (fractional) frames of `format` from the start.
    fn position(&self, format: AudioFormat, at: f64) -> f64 {
        (at - self.start_ms) * f64::from(format.sample_rate) / 1000.0
    }
}

/// Writes the aligned track's PCM data to `out`, in its own format: the first `total` frames
/// (`span.frames(format)`, or fewer where a container cannot hold them all) of the track placed
/// on `span`, reading its audio from `source`.
pub fn render(
    timeline: &Timeline,
    span: Span,
    total: u64,
    source: &Snapshot,
    out: &mut dyn Write,
) -> io::Result<()> {
    let format = timeline.format;
    let mut output = Output {
        out,
        format,
        written: 0,
        total,
    };
    let reader = Reader {
        source,
        format,
        header_len: wav::header_len(format),
    };
    let tolerance = COPY_TOLERANCE_MS * f64::from(format.sample_rate) / 1000.0;
    for run in &timeline.runs {
        let ideal = span.position(format, run.first().at);
        // A run that would overlap the one before it (a clock estimate that jumped back) starts
        // where that one ended: no audio is dropped.
        let start = (ideal.round().max(0.0) as u64).max(output.written);
        let shift = start as f64 - ideal;
        // Each anchor's place on the output, relative to the run's start.
        let places: Vec<(f64, f64)> = run
            .anchors
            .iter()
            .map(|anchor| {
                (
                    span.position(format, anchor.at) + shift - start as f64,
                    (anchor.frame - run.first().frame) as f64,
                )
            })
            .collect();
        output.silence_until(start)?;
        if places
            .iter()
            .all(|&(place, input)| (place - input).abs() <= tolerance)
        {
            copy_run(&reader, run, &mut output)?;
        } else {
            resample_run(&reader, run, &places, &mut output)?;
        }
        if output.written >= total {
            break;
        }
    }
    output.silence_until(total)
}

/// The output side: never more than `total` frames, silence as zero bytes.
struct Output<'a> {
    out: &'a mut dyn Write,
    format: AudioFormat,
    written: u64,
    total: u64,
}

impl Output<'_> {
    fn room(&self) -> u64 {
        self.total - self.written
    }

    fn pcm(&mut self, bytes: &[u8]) -> io::Result<()> {
        let block = self.format.block_size();
        let frames = (bytes.len() as u64 / block).min(self.room());
        self.out.write_all(&bytes[..(frames * block) as usize])?;
        self.written += frames;
        Ok(())
    }

    fn silence_until(&mut self, frame: u64) -> io::Result<()> {
        let zeros = vec![0u8; (READ_FRAMES * self.format.block_size()) as usize];
        while self.written < frame.min(self.total) {
            let frames = (frame.min(self.total) - self.written).min(READ_FRAMES);
            self.pcm(&zeros[..(frames * self.format.block_size()) as usize])?;
        }
        Ok(())
    }
}

/// Reads a track's PCM frames from its snapshot.
struct Reader<'a> {
    source: &'a Snapshot,
    format: AudioFormat,
    header_len: u64,
}

impl Reader<'_> {
    fn frames(&self, from: u64, to: u64) -> io::Result<Vec<u8>> {
        let block = self.format.block_size();
        self.source
            .read(self.header_len + from * block, self.header_len + to * block)
    }
}

fn copy_run(reader: &Reader<'_>, run: &Run, output: &mut Output<'_>) -> io::Result<()> {
    let (mut frame, end) = (run.first().frame, run.last().frame);
    while frame < end && output.room() > 0 {
        let to = (frame + READ_FRAMES).min(end);
        output.pcm(&reader.frames(frame, to)?)?;
        frame = to;
    }
    Ok(())
}

/// Maps an output place (frames from the run's start) to its input position (frames from the
/// run's first frame), linear between anchors and beyond the ends along the nearest segment.
fn input_at(places: &[(f64, f64)], place: f64) -> f64 {
    // The segment whose end lies past `place` (the last one beyond the end).
    let segment = places[1..places.len() - 1].partition_point(|&(end, _)| end <= place);
    let ((p0, i0), (p1, i1)) = (places[segment], places[segment + 1]);
    if p1 <= p0 {
        return i1;
    }
    i0 + (place - p0) * (i1 - i0) / (p1 - p0)
}

/// Resamples one run with a band-limited (windowed sinc) resampler whose ratio is set for each
/// chunk so that the chunk's output frames take exactly the input the anchors give them: every
/// anchor lands where its time says, to a small fraction of a sample.
fn resample_run(
    reader: &Reader<'_>,
    run: &Run,
    places: &[(f64, f64)],
    output: &mut Output<'_>,
) -> io::Result<()> {
    let format = reader.format;
    let channels = usize::from(format.channels);
    let parameters = SincInterpolationParameters::new(128, WindowFunction::BlackmanHarris2)
        .oversampling_factor(128)
        .interpolation(SincInterpolationType::Linear);
    let mut resampler = Async::<f32>::new_sinc(
        1.0,
        MAX_RATIO,
        &parameters,
        RESAMPLER_CHUNK,
        channels,
        FixedAsync::Output,
    )
    .map_err(io::Error::other)?;
    let delay = resampler.output_delay();
    let wanted = places[places.len() - 1].0.round().max(0.0) as u64;
    let (first, end) = (run.first().frame, run.last().frame);
    let mut next_read = first;
    let mut input: Vec<f32> = Vec::new();
    let mut consumed = 0usize; // frames of `input` already taken by the resampler
    let mut out = vec![0f32; resampler.output_frames_max() * channels];
    let mut bytes = Vec::new();
    let (mut produced, mut emitted) = (0u64, 0u64);
    while emitted < wanted && output.room() > 0 {
        let place = produced as f64 - delay as f64;
        let needed = input_at(places, place + RESAMPLER_CHUNK as f64) - input_at(places, place);
        let ratio = (RESAMPLER_CHUNK as f64 / needed.max(1.0)).clamp(1.0 / MAX_RATIO, MAX_RATIO);
        resampler
            .set_resample_ratio(ratio, false)
            .map_err(io::Error::other)?;
        let frames_in = resampler.input_frames_next();
        if input.len() / channels - consumed < frames_in {
            input.drain(..consumed * channels);
            consumed = 0;
            while input.len() / channels < frames_in {
                if next_read < end {
                    let to = (next_read + READ_FRAMES).min(end);
                    decode(&reader.frames(next_read, to)?, format.sample, &mut input);
                    next_read = to;
                } else {
                    // Past the run's end: silence lets the filter's tail out.
                    input.resize((consumed + frames_in) * channels, 0.0);
                }
            }
        }
        let adapter_in = InterleavedSlice::new(&input[consumed * channels..], channels, frames_in)
            .map_err(io::Error::other)?;
        let capacity = out.len() / channels;
        let mut adapter_out =
            InterleavedSlice::new_mut(&mut out, channels, capacity).map_err(io::Error::other)?;
        let (read, made) = resampler
            .process_into_buffer(&adapter_in, &mut adapter_out, None)
            .map_err(io::Error::other)?;
        consumed += read;
        let skip = (delay as u64).saturating_sub(produced).min(made as u64);
        produced += made as u64;
        let usable = (made as u64 - skip).min(wanted - emitted);
        let samples = &out[skip as usize * channels..(skip + usable) as usize * channels];
        bytes.clear();
        encode(samples, format.sample, &mut bytes);
        output.pcm(&bytes)?;
        emitted += usable;
    }
    Ok(())
}

/// PCM bytes of `sample` format to f32 in -1..1.
fn decode(bytes: &[u8], sample: SampleFormat, into: &mut Vec<f32>) {
    match sample {
        SampleFormat::S16le => into.extend(
            bytes
                .chunks_exact(2)
                .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0),
        ),
        SampleFormat::F32le => into.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
    }
}

/// f32 samples back to PCM bytes of `sample` format (s16: rounded and clamped).
fn encode(samples: &[f32], sample: SampleFormat, into: &mut Vec<u8>) {
    match sample {
        SampleFormat::S16le => {
            for &value in samples {
                let scaled = (value * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
                into.extend_from_slice(&scaled.to_le_bytes());
            }
        }
        SampleFormat::F32le => {
            for &value in samples {
                into.extend_from_slice(&value.to_le_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MONO: AudioFormat = AudioFormat {
        sample_rate: 48_000,
        channels: 1,
        sample: SampleFormat::S16le,
    };

    fn mark(frame: u64, at: f64) -> Mark {
        Mark {
            offset: frame * 2,
            captured_at: at,
        }
    }

    #[test]
    fn marks_with_a_jump_make_two_runs_and_the_ends_go_on_at_the_nominal_rate() {
        // 1 s of audio, marked at 0.25 s and 0.5 s; then the clock jumps 10 s at 0.75 s.
        let marks = [
            mark(12_000, 1000.0),
            mark(24_000, 1250.0),
            mark(36_000, 11_500.0),
        ];
        let timeline = Timeline::of_track(MONO, 96_000, &marks, &[], 0.0);
        assert_eq!(timeline.runs.len(), 2);
        assert_eq!(timeline.start(), Some(750.0));
        assert_eq!(timeline.runs[0].last().at, 1500.0);
        assert_eq!(timeline.end(), Some(11_750.0));
    }

    #[test]
    fn segments_place_each_socket_at_its_start() {
        let segments = [(0, 5000.0), (48_000, 9000.0)];
        let timeline = Timeline::of_track(MONO, 96_000, &[], &segments, 0.0);
        assert_eq!(timeline.start(), Some(5000.0));
        assert_eq!(timeline.runs[0].last().at, 5500.0);
        assert_eq!(timeline.runs[1].first().at, 9000.0);
        assert_eq!(timeline.end(), Some(9500.0));
    }

    #[test]
    fn input_positions_follow_the_anchors_and_extend_beyond_them() {
        let places = [(0.0, 0.0), (1000.0, 1001.0), (2000.0, 2001.0)];
        assert_eq!(input_at(&places, 500.0), 500.5);
        assert_eq!(input_at(&places, 1500.0), 1501.0);
        assert_eq!(input_at(&places, 2500.0), 2501.0);
        assert!((input_at(&places, -100.0) + 100.1).abs() < 1e-9);
    }
}
