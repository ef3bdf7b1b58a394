//! Audio helpers shared by the test binaries: a frame on the wire, deterministic PCM, and a
//! WAV file read back with every size field checked. Included with `#[path]` by each binary.

pub fn frame(offset: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = offset.to_le_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

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
    hound::WavReader::new(std::io::Cursor::new(&bytes)).expect("hound parses the WAV");
    let layout = safetake::audio::wav::read_layout(bytes.len() as u64, |buf, pos| {
        let pos = pos as usize;
        buf.copy_from_slice(&bytes[pos..pos + buf.len()]);
        Ok(())
    })
    .expect("a data chunk");
    let start = layout.data_start as usize;
    let declared = u32::from_le_bytes(bytes[start - 4..start].try_into().unwrap());
    assert_eq!(
        declared as usize,
        bytes.len() - start,
        "data size field matches the data"
    );
    let riff = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    assert_eq!(
        riff as usize,
        bytes.len() - 8,
        "RIFF size field matches the file"
    );
    bytes[start..].to_vec()
}
