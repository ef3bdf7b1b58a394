//! Audio helpers shared by the test binaries: a frame on the wire, deterministic PCM, and a
//! WAV file read back with every size field checked. Included with `#[path]` by each binary.

/// A frame on the wire: the server's own encoder, the one the load generator uses too.
pub use safetake::ingest::frame::encode as frame;

/// Deterministic audio-like bytes, different per seed, so a misplaced byte shows.
pub fn pcm(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        })
        .collect()
}

/// The PCM bytes of a WAV file, after checking that hound parses it and that both size fields
/// match the bytes actually in the file.
pub fn read_wav_data(path: &std::path::Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = hound::WavReader::new(std::io::Cursor::new(&bytes[..]))
        .unwrap_or_else(|e| panic!("hound parses {}: {e}", path.display()));
    let bytes_per_sample = u64::from(reader.spec().bits_per_sample / 8);
    let declared = u64::from(reader.len()) * bytes_per_sample;
    // hound stops reading at the start of the data chunk.
    let start = reader.into_inner().position() as usize;
    assert_eq!(
        declared,
        (bytes.len() - start) as u64,
        "data size field matches the data"
    );
    let riff = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
    assert_eq!(
        riff as usize,
        bytes.len() - 8,
        "RIFF size field matches the file"
    );
    bytes[start..].to_vec()
}
