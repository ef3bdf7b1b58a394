//! One timeline: the aligned export puts every track on the session's clock (late joins and
//! crashes as silence, a fast sound card resampled so every click sits where it was captured),
//! in WAV and FLAC, read back with independent decoders (hound, claxon, and `flac -t`).

use std::io::Cursor;

use serde_json::{json, Value};

use crate::archive::{archive_of, entries};
use crate::helpers::*;

const RATE: f64 = 48_000.0;
/// A moment on the server's clock to place tracks from: now, to the second (ms since the
/// epoch; the export leaves out capture times from outside the session's life).
fn now_ms() -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (now.as_secs() * 1000) as f64
}

fn mark(offset: u64, captured_at: f64) -> String {
    json!({"type": "mark", "offset": offset, "capturedAt": captured_at}).to_string()
}

async fn finish(app: &TestApp, id: &str) {
    let response = app.post(&format!("/api/session/{id}/finish"), None).await;
    assert_eq!(response.status(), 200);
}

async fn export(app: &TestApp, id: &str, query: &str) -> Vec<(String, Vec<u8>)> {
    let response = app
        .get(&format!("/api/session/{id}/export.zip{query}"))
        .await;
    assert_eq!(response.status(), 200, "export{query}");
    assert_eq!(response.headers()["content-type"], "application/zip");
    let disposition = response.headers()["content-disposition"].to_str().unwrap();
    let suffix = match (query.contains("aligned=true"), query.contains("flac")) {
        (false, false) => "",
        (false, true) => " flac",
        (true, false) => " aligned",
        (true, true) => " aligned flac",
    };
    assert!(
        disposition.ends_with(&format!("{suffix}.zip\"")),
        "{disposition}"
    );
    entries(&response.bytes().await.unwrap())
}

fn entry<'a>(entries: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    &entries
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} in the archive"))
        .1
}

/// A WAV's samples as hound reads them (integers for s16, floats for f32), and its spec.
enum Samples {
    Int(Vec<i32>),
    Float(Vec<f32>),
}

fn read_wav(bytes: &[u8]) -> (hound::WavSpec, Samples) {
    let mut reader = hound::WavReader::new(Cursor::new(bytes)).expect("hound reads the WAV");
    let spec = reader.spec();
    let samples = match spec.sample_format {
        hound::SampleFormat::Int => {
            Samples::Int(reader.samples::<i32>().map(Result::unwrap).collect())
        }
        hound::SampleFormat::Float => {
            Samples::Float(reader.samples::<f32>().map(Result::unwrap).collect())
        }
    };
    (spec, samples)
}

fn ints(samples: Samples) -> Vec<i32> {
    match samples {
        Samples::Int(values) => values,
        Samples::Float(_) => panic!("expected integer samples"),
    }
}

/// A FLAC's stream info and interleaved samples, as claxon decodes them; and, where the
/// reference `flac` tool is installed (tests/run-all.sh installs it), its own check.
fn read_flac(bytes: &[u8]) -> (claxon::metadata::StreamInfo, Vec<i32>) {
    let mut reader = claxon::FlacReader::new(Cursor::new(bytes)).expect("claxon reads the FLAC");
    let info = reader.streaminfo();
    let samples = reader
        .samples()
        .collect::<Result<Vec<i32>, _>>()
        .expect("claxon decodes every frame");
    assert_eq!(
        samples.len() as u64,
        info.samples.expect("total samples") * u64::from(info.channels)
    );
    flac_tool_check(bytes);
    (info, samples)
}

fn flac_tool_check(bytes: &[u8]) {
    let tool = std::path::Path::new("/usr/bin/flac");
    if !tool.exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "tests/run-all.sh installs flac; CI must have it"
        );
        eprintln!("flac is not installed: the reference decoder's check is left out");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("track.flac");
    std::fs::write(&path, bytes).unwrap();
    let output = std::process::Command::new(tool)
        .arg("-t")
        .arg("-s")
        .arg(&path)
        .output()
        .expect("flac runs");
    assert!(
        output.status.success(),
        "flac -t: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A quiet tone at `frame` of a track (never silent, so silence shows), with clicks.
fn tone(frame: u64) -> i16 {
    (1000.0 * (frame as f64 * 2.0 * std::f64::consts::PI * 440.0 / RATE).sin()).round() as i16 + 3
}

/// `frames` of mono s16 from `first` on: the tone, and a click centred on each of `clicks`.
fn audio(first: u64, frames: u64, clicks: &[u64]) -> Vec<u8> {
    (first..first + frames)
        .flat_map(|frame| {
            let near = clicks.iter().map(|&c| frame.abs_diff(c)).min().unwrap_or(9);
            let value = match near {
                0 => 30_000,
                1 => 16_000,
                _ => tone(frame),
            };
            value.to_le_bytes()
        })
        .collect()
}

async fn send_in_seconds(socket: &mut WsClient, offset: u64, bytes: &[u8]) {
    for (i, chunk) in bytes.chunks(96_000).enumerate() {
        socket.send_frame(offset + (i * 96_000) as u64, chunk).await;
    }
}

/// Where the loudest sample near `expected` (a frame of the aligned track) is.
fn click_near(samples: &[i32], expected: f64) -> f64 {
    let window = (RATE * 0.02) as i64;
    let centre = expected.round() as i64;
    let (at, peak) = (centre - window..=centre + window)
        .filter(|&i| i >= 0 && (i as usize) < samples.len())
        .map(|i| (i, samples[i as usize].abs()))
        .max_by_key(|&(_, value)| value)
        .expect("a window inside the track");
    assert!(
        peak > 15_000,
        "no click near frame {expected}: loudest {peak}"
    );
    at as f64
}

/// Frames `from..to` of an aligned track are all silence.
fn silent(samples: &[i32], from: f64, to: f64) -> bool {
    samples[from.ceil() as usize..to.floor() as usize]
        .iter()
        .all(|&value| value == 0)
}

#[tokio::test]
async fn aligned_tracks_share_one_span_and_every_click_sits_within_a_millisecond_of_its_capture() {
    let app = spawn_app().await;
    // The first track's first sample.
    let t0 = now_ms();
    let id = app.create_session().await;

    // Track `a`: 30 s captured from t0 on by a clock that is the server's, marked every 5 s.
    let a_clicks = [48_000u64, 350_400, 724_800, 1_200_000, 1_430_000];
    let a_audio = audio(0, 1_440_000, &a_clicks);
    let (mut a, _) = app.connect(&id, "track=a").await;
    send_in_seconds(&mut a, 0, &a_audio).await;
    for second in (0..30).step_by(5) {
        let frame = second * 48_000;
        a.send_text(&mark(frame * 2, t0 + frame as f64 / 48.0))
            .await;
    }
    a.flush(a_audio.len() as u64).await;
    a.close().await;

    // Track `b`: starts 2.000 s after `a`, its sound card 500 ppm fast (48 024 frames a real
    // second); captures 6 s, crashes for 10 s, then captures 8 s more through a new socket.
    let fast = 48.024; // frames per ms of server time
    let b_time = |frame: u64, run_start_frame: u64, run_start_ms: f64| {
        run_start_ms + (frame - run_start_frame) as f64 / fast
    };
    let run1 = 288_144u64; // 6 s of real time
    let run2 = 384_192u64; // 8 s
    let (start1, start2) = (t0 + 2000.0, t0 + 18_000.0);
    let b_clicks = [48_024u64, 158_479, 249_725, run1 + 72_036, run1 + 331_366];
    let b_audio = audio(0, run1 + run2, &b_clicks);
    let (mut b, _) = app.connect(&id, "track=b").await;
    send_in_seconds(&mut b, 0, &b_audio[..(run1 * 2) as usize]).await;
    for frame in [0, 96_048, 192_096, 264_132] {
        b.send_text(&mark(frame * 2, b_time(frame, 0, start1)))
            .await;
    }
    b.flush(run1 * 2).await;
    b.close().await;
    let (mut b, ready) = app.connect(&id, "track=b").await;
    assert_eq!(ready["offset"], run1 * 2);
    send_in_seconds(&mut b, run1 * 2, &b_audio[(run1 * 2) as usize..]).await;
    for frame in [0, 96_048, 192_096, 288_144, 372_186] {
        let frame = run1 + frame;
        b.send_text(&mark(frame * 2, b_time(frame, run1, start2)))
            .await;
    }
    b.flush((run1 + run2) * 2).await;
    b.close().await;
    finish(&app, &id).await;

    let files = export(&app, &id, "?aligned=true").await;
    let manifest: Value = serde_json::from_slice(entry(&files, "session.json")).unwrap();
    assert_eq!(manifest["timeline"]["startMs"], t0);
    let (spec_a, a_out) = read_wav(entry(&files, "a.wav"));
    let (spec_b, b_out) = read_wav(entry(&files, "b.wav"));
    assert_eq!(
        (spec_a.sample_rate, spec_a.channels, spec_a.bits_per_sample),
        (48_000, 1, 16)
    );
    assert_eq!(
        (spec_b.sample_rate, spec_b.channels, spec_b.bits_per_sample),
        (48_000, 1, 16)
    );
    let (a_out, b_out) = (ints(a_out), ints(b_out));
    // One span: t0 to the end of `a` (30 s), `b` ending 4 s before it.
    assert!(
        a_out.len().abs_diff(b_out.len()) <= 1,
        "{} vs {}",
        a_out.len(),
        b_out.len()
    );
    assert!(a_out.len().abs_diff(1_440_000) <= 1, "{}", a_out.len());

    let place = |captured_at: f64| (captured_at - t0) * RATE / 1000.0;
    let one_ms = RATE / 1000.0;
    for &click in &a_clicks {
        let expected = place(t0 + click as f64 / 48.0);
        let found = click_near(&a_out, expected);
        assert!(
            (found - expected).abs() <= one_ms,
            "a: click at {found}, captured at {expected}"
        );
    }
    for &click in &b_clicks {
        let captured = if click < run1 {
            b_time(click, 0, start1)
        } else {
            b_time(click, run1, start2)
        };
        let expected = place(captured);
        let found = click_near(&b_out, expected);
        assert!(
            (found - expected).abs() <= one_ms,
            "b: click at frame {found}, captured at frame {expected} ({} ms off)",
            (found - expected) / one_ms
        );
    }

    // `b` is silent until it joined, 2.000 s in, and for the 10 s of its crash.
    let (joined, crashed, back) = (place(start1), place(start1 + 6000.0), place(start2));
    assert!(silent(&b_out, 0.0, joined - 1.0), "b before it joined");
    assert!(
        b_out[(joined + one_ms) as usize..(joined + 2.0 * one_ms) as usize]
            .iter()
            .any(|&v| v != 0)
    );
    assert!(
        silent(&b_out, crashed + one_ms, back - one_ms),
        "b during its crash"
    );
    assert!(
        b_out[(crashed - 2.0 * one_ms) as usize..(crashed - one_ms) as usize]
            .iter()
            .any(|&v| v != 0)
    );
    assert!(
        b_out[(back + one_ms) as usize..(back + 2.0 * one_ms) as usize]
            .iter()
            .any(|&v| v != 0)
    );
    // And after its last sample, to the common end.
    assert!(silent(
        &b_out,
        place(start2 + 8000.0) + one_ms,
        b_out.len() as f64
    ));
}

/// An archive of an old session: tracks with segments and no marks.
/// A track of an old session: its name, its segments (`offset`, `startedAt`) and its PCM.
type OldTrack<'a> = (&'a str, Vec<(u64, &'a str)>, Vec<u8>);

fn old_session_archive(tracks: &[OldTrack<'_>]) -> Vec<u8> {
    let format = safetake::audio::AudioFormat::DEFAULT;
    let manifest = json!({
        "title": "before marks",
        "createdAt": "2026-11-25T16:37:30.000Z",
        "tracks": tracks.iter().map(|(name, segments, data)| json!({
            "name": name,
            "sampleRate": 48_000,
            "channels": 1,
            "format": "s16le",
            "dataBytes": data.len(),
            "segments": segments.iter().map(|(offset, at)| json!({"offset": offset, "startedAt": at})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let wavs: Vec<(String, Vec<u8>)> = tracks
        .iter()
        .map(|(name, _, data)| {
            let mut wav = safetake::audio::wav::header(format, data.len() as u64);
            wav.extend_from_slice(data);
            (format!("{name}.wav"), wav)
        })
        .collect();
    let mut files: Vec<(&str, &[u8])> = vec![("session.json", &manifest)];
    files.extend(wavs.iter().map(|(n, w)| (n.as_str(), w.as_slice())));
    archive_of(&files)
}

#[tokio::test]
async fn a_session_without_marks_aligns_by_its_segments_started_at() {
    let app = spawn_app().await;
    let (host, guest_1, guest_2) = (pcm(1, 288_000), pcm(2, 96_000), pcm(3, 96_000));
    let guest: Vec<u8> = [guest_1.clone(), guest_2.clone()].concat();
    let zip = old_session_archive(&[
        ("host", vec![(0, "2026-11-25T16:37:35.000Z")], host.clone()),
        (
            "guest",
            vec![
                (0, "2026-11-25T16:37:36.500Z"),
                (96_000, "2026-11-25T16:37:39.000Z"),
            ],
            guest,
        ),
    ]);
    let response = app.import(zip).await;
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let files = export(&app, &id, "?aligned=true").await;
    // From the host's start to the end of the guest's second socket: 5 s.
    let silence = |seconds: f64| vec![0u8; (seconds * 96_000.0) as usize];
    let host_wav = entry(&files, "host.wav");
    let guest_wav = entry(&files, "guest.wav");
    assert_eq!(&host_wav[44..], [host, silence(2.0)].concat());
    assert_eq!(
        &guest_wav[44..],
        [silence(1.5), guest_1, silence(1.5), guest_2].concat()
    );
    read_wav(host_wav);
    read_wav(guest_wav);
}

/// f32 samples in -1..1 as little-endian bytes, varied per seed.
fn float_pcm(seed: u64, samples: usize) -> Vec<u8> {
    pcm(seed, samples * 2)
        .chunks_exact(2)
        .flat_map(|b| (f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).to_le_bytes())
        .collect()
}

#[tokio::test]
async fn every_format_exports_as_wav_and_flac_with_the_samples_it_stored() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let tracks = [
        (
            "stereo",
            "sampleRate=48000&channels=2&format=s16le",
            pcm(7, 4 * 30_000),
        ),
        (
            "float",
            "sampleRate=44100&channels=2&format=f32le",
            float_pcm(8, 2 * 20_000),
        ),
        (
            "six",
            "sampleRate=48000&channels=6&format=s16le",
            pcm(9, 12 * 10_000),
        ),
        (
            "sixfloat",
            "sampleRate=96000&channels=6&format=f32le",
            float_pcm(10, 6 * 9_000),
        ),
    ];
    for (name, query, data) in &tracks {
        let (mut socket, _) = app.connect(&id, &format!("track={name}&{query}")).await;
        socket.send_frame(0, data).await;
        socket.flush(data.len() as u64).await;
        socket.close().await;
    }
    finish(&app, &id).await;

    let stored = export(&app, &id, "?format=flac").await;
    let aligned = export(&app, &id, "?aligned=true").await;
    let aligned_flac = export(&app, &id, "?aligned=true&format=flac").await;
    let manifest: Value = serde_json::from_slice(entry(&aligned, "session.json")).unwrap();
    let span_start = manifest["timeline"]["startMs"].as_f64().unwrap();
    let session = app.session(&id).await;
    for (name, _, data) in &tracks {
        let track = session["tracks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == *name)
            .unwrap();
        let (rate, channels) = (
            track["sampleRate"].as_u64().unwrap(),
            track["channels"].as_u64().unwrap(),
        );
        let float = track["format"] == "f32le";
        // The stored samples, as integers (s16) or floats (f32).
        let width = if float { 4 } else { 2 };
        let stored_ints: Vec<i32> = data
            .chunks_exact(2)
            .map(|b| i32::from(i16::from_le_bytes([b[0], b[1]])))
            .collect();
        let stored_floats: Vec<f32> = data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let check_flac = |bytes: &[u8], expected_frames: Option<usize>| -> Vec<i32> {
            let (info, samples) = read_flac(bytes);
            assert_eq!(u64::from(info.sample_rate), rate, "{name}");
            assert_eq!(u64::from(info.channels), channels, "{name}");
            assert_eq!(info.bits_per_sample, if float { 24 } else { 16 }, "{name}");
            if let Some(frames) = expected_frames {
                assert_eq!(samples.len(), frames * channels as usize, "{name}");
            }
            samples
        };
        let same = |flac: &[i32], from: usize, what: &str| {
            if float {
                let lsb = 1.0 / 8_388_608.0;
                for (i, (&decoded, &original)) in
                    flac[from..].iter().zip(&stored_floats).enumerate()
                {
                    let error = (f64::from(decoded) * lsb - f64::from(original)).abs();
                    assert!(
                        error <= 0.5 * lsb,
                        "{name} {what}: sample {i} is {error} off"
                    );
                }
            } else {
                assert_eq!(
                    &flac[from..from + stored_ints.len()],
                    &stored_ints[..],
                    "{name} {what}"
                );
            }
        };

        // As stored, in FLAC: every sample, nothing else.
        let frames = data.len() / (width * channels as usize);
        let as_stored = check_flac(entry(&stored, &format!("{name}.flac")), Some(frames));
        same(&as_stored, 0, "flac as stored");

        // Aligned WAV: the stored bytes, verbatim, where its socket attached on the span.
        let wav = entry(&aligned, &format!("{name}.wav"));
        let (spec, decoded) = read_wav(wav);
        assert_eq!(
            (u64::from(spec.sample_rate), u64::from(spec.channels)),
            (rate, channels)
        );
        let header = safetake::audio::wav::header_len(
            safetake::audio::AudioFormat::new(
                rate as u32,
                channels as u16,
                if float {
                    safetake::audio::SampleFormat::F32le
                } else {
                    safetake::audio::SampleFormat::S16le
                },
            )
            .unwrap(),
        ) as usize;
        let started =
            safetake::domain::parse_timestamp(track["segments"][0]["startedAt"].as_str().unwrap())
                .unwrap()
                .and_utc()
                .timestamp_millis() as f64;
        let lead = ((started - span_start) * rate as f64 / 1000.0).round() as usize;
        let block = width * channels as usize;
        let pcm_out = &wav[header..];
        assert!(
            pcm_out[..lead * block].iter().all(|&b| b == 0),
            "{name}: silence before it"
        );
        assert_eq!(
            &pcm_out[lead * block..lead * block + data.len()],
            &data[..],
            "{name}"
        );
        let from = lead * channels as usize;
        match decoded {
            Samples::Float(values) => assert_eq!(
                &values[from..from + stored_floats.len()],
                &stored_floats[..]
            ),
            Samples::Int(values) => {
                assert_eq!(&values[from..from + stored_ints.len()], &stored_ints[..])
            }
        }

        // Aligned FLAC: the same frames as the aligned WAV.
        let aligned_frames = pcm_out.len() / block;
        let flac = check_flac(
            entry(&aligned_flac, &format!("{name}.flac")),
            Some(aligned_frames),
        );
        same(&flac, lead * channels as usize, "aligned flac");
        assert!(flac[..lead * channels as usize].iter().all(|&v| v == 0));
    }
}

#[tokio::test]
async fn an_aligned_export_while_recording_holds_every_acked_byte() {
    let app = spawn_app().await;
    let t0 = now_ms();
    let id = app.create_session().await;
    let (mut mic, _) = app.connect(&id, "track=mic").await;
    let data = pcm(11, 192_000);
    mic.send_frame(0, &data).await;
    mic.send_text(&mark(0, t0)).await;
    mic.send_text(&mark(96_000, t0 + 1000.0)).await;
    let acked = mic.flush(data.len() as u64).await;
    for query in ["?aligned=true", "?aligned=true&format=flac"] {
        let files = export(&app, &id, query).await;
        let stored: Vec<i32> = if query.ends_with("flac") {
            read_flac(entry(&files, "mic.flac")).1
        } else {
            ints(read_wav(entry(&files, "mic.wav")).1)
        };
        assert!(
            stored.len() as u64 * 2 >= acked,
            "{query}: {} < {acked}",
            stored.len() * 2
        );
        let sent: Vec<i32> = data[..stored.len() * 2]
            .chunks_exact(2)
            .map(|b| i32::from(i16::from_le_bytes([b[0], b[1]])))
            .collect();
        assert_eq!(stored, sent, "{query}");
    }
    mic.close().await;
}

#[tokio::test]
async fn the_history_page_offers_both_exports_and_bad_options_are_refused() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (mut mic, _) = app.connect(&id, "track=mic").await;
    mic.send_frame(0, &pcm(12, 4800)).await;
    mic.flush(4800).await;
    mic.close().await;
    let history = app.get("/").await.text().await.unwrap();
    assert!(history.contains(&format!("href=\"/api/session/{id}/export.zip\"")));
    assert!(
        history.contains(&format!(
            "href=\"/api/session/{id}/export.zip?aligned=true\""
        )),
        "{history}"
    );
    assert!(history.contains("data-testid=\"export-aligned\""));
    assert!(history.contains(&format!(
        "href=\"/api/session/{id}/export.zip?aligned=true&amp;format=flac\""
    )));
    for query in ["?aligned=maybe", "?format=ogg"] {
        let response = app
            .get(&format!("/api/session/{id}/export.zip{query}"))
            .await;
        assert_error(response, 400, "invalid_format").await;
    }
}

#[tokio::test]
async fn a_capture_time_from_a_broken_clock_does_not_stretch_the_aligned_export() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (mut mic, _) = app.connect(&id, "track=mic").await;
    let data = pcm(13, 96_000);
    mic.send_frame(0, &data).await;
    mic.send_text(&mark(0, now_ms())).await;
    // Thirty thousand years on: a socket may send it; the export must not wait for it.
    mic.send_text(&mark(48_000, 1e15)).await;
    mic.flush(data.len() as u64).await;
    mic.close().await;
    finish(&app, &id).await;
    let files = export(&app, &id, "?aligned=true").await;
    let (_, samples) = read_wav(entry(&files, "mic.wav"));
    assert_eq!(ints(samples).len(), 48_000);
}
