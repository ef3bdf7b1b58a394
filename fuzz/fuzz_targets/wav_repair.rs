//! Fuzzes crash repair of a track's WAV file (`TrackFile::repair`) and the chunk walker under it
//! (`wav::read_layout`). Repair runs on whatever a crash, a full disk or a bad copy left on disk,
//! so for any bytes it must not panic, must leave a WAV that hound (a reader independent of
//! ours) opens, with size fields that match the file, and must keep every whole block of audio.
#![no_main]

use std::fs;
use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use safetake::audio::wav::{self, Layout};
use safetake::audio::{AudioFormat, SampleFormat, TrackFile};

fuzz_target!(|input: &[u8]| {
    let Ok((fallback, before, known_layout)) = build_file(&mut Unstructured::new(input)) else {
        return;
    };
    // A file built from our own header must walk to that header's layout, whatever its sizes say.
    if let Some(known) = known_layout {
        assert_eq!(
            layout_of(&before).ok(),
            Some(known),
            "walker lost a valid header"
        );
    }

    let path = scratch_path();
    fs::write(path, &before).unwrap();
    let repaired = TrackFile::repair(path, fallback);
    let after = fs::read(path).unwrap();
    // A file without a readable header is refused and left byte for byte, unless it is the
    // start of the empty header `create` writes (a crash while creating): that is completed.
    let empty = wav::header(fallback, 0);
    if layout_of(&before).is_err() && !empty.starts_with(&before) {
        assert!(repaired.is_err(), "an unreadable header was not refused");
        assert_same_bytes(&after, &before);
        return;
    }
    let report = repaired.expect("repairing an existing file failed");

    // What repair must leave: the file cut to its whole blocks, byte for byte, with only the two
    // size fields rewritten to match the new length; or, if the file was torn while it was
    // created, the empty header in the stored format. One comparison checks all of it.
    let (layout, expected) = match layout_of(&before) {
        Ok(layout) => {
            let start = layout.data_start as usize;
            let on_disk = before.len() - start;
            let whole = on_disk - on_disk % layout.format.block_size() as usize;
            let mut kept = before[..start + whole].to_vec();
            if layout == Layout::of(layout.format) {
                // A header of the server's own length is rewritten whole, in its canonical form.
                kept[..start].copy_from_slice(&wav::header(layout.format, whole as u64));
            } else {
                set_sizes(&mut kept, &layout);
            }
            (layout, kept)
        }
        Err(_) => (Layout::of(fallback), empty),
    };
    assert_same_bytes(&after, &expected);
    let data_bytes = (after.len() as u64) - layout.data_start;
    assert_eq!(report.format, layout.format);
    assert_eq!(report.data_bytes, data_bytes);

    // An independent reader must agree on the format and on how much audio there is. Only for
    // the server's own layout: files with extra chunks hit hound's own limits (it skips no pad
    // byte after an odd-sized chunk), which say nothing of the repair.
    if layout != Layout::of(layout.format) {
        return;
    }
    let reader = hound::WavReader::new(Cursor::new(&after))
        .unwrap_or_else(|error| panic!("hound rejects the repaired file: {error}"));
    let format = layout.format;
    let sample_format = match format.sample {
        SampleFormat::S16le => hound::SampleFormat::Int,
        SampleFormat::F32le => hound::SampleFormat::Float,
    };
    let bits = format.sample.bytes_per_sample() * 8;
    let spec = reader.spec();
    assert_eq!(
        (
            spec.channels,
            spec.sample_rate,
            spec.bits_per_sample,
            spec.sample_format
        ),
        (format.channels, format.sample_rate, bits, sample_format),
        "hound reads another format than the server writes"
    );
    assert_eq!(
        u64::from(reader.duration()) * format.block_size(),
        data_bytes
    );
});

/// The file to repair and the fallback format. Half the inputs are raw bytes (for the header
/// parser's worst cases); the other half are files this server wrote, so that the fuzzer
/// spends its time on torn tails and stale sizes rather than on rediscovering "RIFF".
fn build_file(u: &mut Unstructured) -> Result<(AudioFormat, Vec<u8>, Option<Layout>)> {
    let fallback = format(u)?;
    if u.arbitrary()? {
        return Ok((fallback, rest(u)?.to_vec(), None));
    }
    let layout = Layout::of(format(u)?);
    let (riff_kind, riff_raw): (u8, u32) = (u.arbitrary()?, u.arbitrary()?);
    let (data_kind, data_raw): (u8, u32) = (u.arbitrary()?, u.arbitrary()?);
    // Header, then PCM of any length: a crash can tear the last block anywhere.
    let mut file = wav::header(layout.format, 0);
    file.extend_from_slice(rest(u)?);
    let data_len = file.len() as u64 - layout.data_start;
    let riff = size_field(riff_kind, riff_raw, layout.riff_size(data_len));
    let data = size_field(data_kind, data_raw, data_len as u32);
    file[4..8].copy_from_slice(&riff.to_le_bytes());
    let start = layout.data_start as usize;
    file[start - 4..start].copy_from_slice(&data.to_le_bytes());
    Ok((fallback, file, Some(layout)))
}

/// All the input that is left.
fn rest<'a>(u: &mut Unstructured<'a>) -> Result<&'a [u8]> {
    u.bytes(u.len())
}

/// A size field as a crash or a bad copy leaves it: right, stale (written before the last
/// appends, so smaller) or garbage.
fn size_field(kind: u8, raw: u32, right: u32) -> u32 {
    match kind % 3 {
        0 => right,
        1 => (u64::from(raw) % (u64::from(right) + 1)) as u32,
        _ => raw,
    }
}

/// Any format the contract allows.
fn format(u: &mut Unstructured) -> Result<AudioFormat> {
    let sample = if u.arbitrary()? {
        SampleFormat::F32le
    } else {
        SampleFormat::S16le
    };
    let channels = u.int_in_range(AudioFormat::CHANNELS)?;
    let sample_rate = u.int_in_range(AudioFormat::SAMPLE_RATES)?;
    Ok(AudioFormat::new(sample_rate, channels, sample).expect("in range"))
}

/// The chunk walk over bytes in memory, failing past the end as `read_exact_at` does.
fn layout_of(bytes: &[u8]) -> io::Result<Layout> {
    wav::read_layout(bytes.len() as u64, |buf, pos| {
        let start = usize::try_from(pos).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| bytes.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    })
}

/// Sets both size fields to what the file's length says they must be.
fn set_sizes(file: &mut [u8], layout: &Layout) {
    let data_bytes = file.len() as u64 - layout.data_start;
    let start = layout.data_start as usize;
    file[4..8].copy_from_slice(&layout.riff_size(data_bytes).to_le_bytes());
    file[start - 4..start].copy_from_slice(&(data_bytes as u32).to_le_bytes());
}

/// Compares files without dumping kilobytes of bytes into the crash report.
fn assert_same_bytes(after: &[u8], expected: &[u8]) {
    if let Some(at) =
        (0..after.len().max(expected.len())).find(|&i| after.get(i) != expected.get(i))
    {
        panic!(
            "repaired file differs at byte {at}: {} bytes, expected {} bytes; got {:?}, expected {:?}",
            after.len(),
            expected.len(),
            after.get(at),
            expected.get(at)
        );
    }
}

static SCRATCH: OnceLock<PathBuf> = OnceLock::new();

/// One scratch file per process, rewritten for every input: a fresh temp dir per run would
/// cost more than the repair. It sits in a per-process directory under $TMPDIR (tests/fuzz.sh
/// points that at a directory it removes) so parallel jobs never share it.
fn scratch_path() -> &'static Path {
    SCRATCH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("safetake-wav-repair-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        // libFuzzer ends a clean run with exit(), which skips Rust destructors but not atexit.
        unsafe { libc::atexit(remove_scratch) };
        dir.join("track.wav")
    })
}

extern "C" fn remove_scratch() {
    if let Some(dir) = SCRATCH.get().and_then(|path| path.parent()) {
        let _ = fs::remove_dir_all(dir);
    }
}
