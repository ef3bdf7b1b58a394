//! Export and import: a session leaves as one ZIP holding its tracks byte for byte, and comes
//! back in as a new completed session; anything export would not have made is refused.

use std::io::{Cursor, Read, Write};

use serde_json::{json, Value};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipArchive, ZipWriter};

use crate::helpers::*;

/// Two tracks in two formats, the second with a reconnect (two segments), finished.
async fn recorded_session(app: &TestApp) -> String {
    let response = app
        .post(
            "/api/sessions",
            Some(json!({"title": "Épisode 12: «guests»"})),
        )
        .await;
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut mic, _) = app.connect(&id, "track=mic").await;
    mic.send_frame(0, &pcm(1, 4800)).await;
    mic.flush(4800).await;
    mic.close().await;
    let query = "track=guest&sampleRate=44100&channels=2&format=f32le";
    let (mut guest, _) = app.connect(&id, query).await;
    guest.send_frame(0, &pcm(2, 8000)).await;
    guest.flush(8000).await;
    guest.close().await;
    let (mut guest, _) = app.connect(&id, query).await;
    guest.send_frame(8000, &pcm(3, 800)).await;
    guest.flush(8800).await;
    guest.close().await;
    assert_eq!(
        app.post(&format!("/api/session/{id}/finish"), None)
            .await
            .status(),
        200
    );
    id
}

async fn export(app: &TestApp, id: &str) -> Vec<u8> {
    let response = app.get(&format!("/api/session/{id}/export.zip")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/zip");
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        disposition.starts_with("attachment; filename=\""),
        "{disposition}"
    );
    assert!(disposition.ends_with(".zip\""), "{disposition}");
    response.bytes().await.unwrap().to_vec()
}

pub(crate) fn entries(zip_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut zip = ZipArchive::new(Cursor::new(zip_bytes)).expect("a readable ZIP");
    (0..zip.len())
        .map(|i| {
            let mut entry = zip.by_index(i).unwrap();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (entry.name().unwrap().to_string(), bytes)
        })
        .collect()
}

fn entry<'a>(entries: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    &entries.iter().find(|(n, _)| n == name).expect(name).1
}

#[tokio::test]
async fn export_holds_every_track_as_stored_and_the_session() {
    let app = spawn_app().await;
    let id = recorded_session(&app).await;
    let zip = export(&app, &id).await;
    let entries = entries(&zip);
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for track in ["mic", "guest"] {
        let stored = std::fs::read(app.track_path(&id, track)).unwrap();
        assert_eq!(entry(&entries, &format!("{track}.wav")), stored, "{track}");
    }
    let manifest: Value = serde_json::from_slice(entry(&entries, "session.json")).unwrap();
    assert_eq!(manifest["id"], id);
    assert_eq!(manifest["title"], "Épisode 12: «guests»");
    assert_eq!(manifest["status"], "completed");
    let session = app.session(&id).await;
    // The tracks as the Session shows them, each with its marks besides (none were sent here).
    let mut tracks = manifest["tracks"].clone();
    for track in tracks.as_array_mut().unwrap() {
        let marks = track.as_object_mut().unwrap().remove("marks");
        assert_eq!(marks, Some(json!([])));
    }
    assert_eq!(tracks, session["tracks"]);
    // The history page offers it.
    let history = app.get("/").await.text().await.unwrap();
    assert!(history.contains(&format!("href=\"/api/session/{id}/export.zip\"")));
}

#[tokio::test]
async fn export_while_recording_holds_every_acked_byte() {
    let app = spawn_app().await;
    let id = app.create_session().await;
    let (mut mic, _) = app.connect(&id, "track=mic").await;
    let audio = pcm(4, 96_000);
    mic.send_frame(0, &audio).await;
    let acked = mic.flush(96_000).await;
    let zip = export(&app, &id).await;
    let entries = entries(&zip);
    let wav = entry(&entries, "mic.wav");
    let path = std::env::temp_dir().join(format!("safetake-export-{id}.wav"));
    std::fs::write(&path, wav).unwrap();
    let data = read_wav_data(&path);
    std::fs::remove_file(&path).unwrap();
    assert!(data.len() as u64 >= acked, "{} < {acked}", data.len());
    assert_eq!(data, audio[..data.len()]);
}

#[tokio::test]
async fn import_of_an_export_restores_tracks_and_segments_byte_for_byte() {
    let app = spawn_app().await;
    let id = recorded_session(&app).await;
    let zip = export(&app, &id).await;
    let response = app.import(zip).await;
    assert_eq!(response.status(), 201);
    let imported: Value = response.json().await.unwrap();
    let new_id = imported["id"].as_str().unwrap().to_string();
    assert_ne!(new_id, id);
    assert_eq!(imported["status"], "completed");
    assert_eq!(imported["title"], "Épisode 12: «guests»");
    let (old, new) = (app.session(&id).await, app.session(&new_id).await);
    let strip = |tracks: &Value| -> Vec<Value> {
        tracks
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let mut t = t.clone();
                t.as_object_mut().unwrap().remove("path");
                t
            })
            .collect()
    };
    assert_eq!(strip(&old["tracks"]), strip(&new["tracks"]));
    assert_eq!(new["createdAt"], old["createdAt"]);
    for track in ["mic", "guest"] {
        let download = app
            .get(&format!("/api/session/{new_id}/tracks/{track}.wav"))
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(download, std::fs::read(app.track_path(&id, track)).unwrap());
    }
}

/// Builds an archive by hand: `(name, bytes)` entries, stored.
pub(crate) fn archive_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes) in files {
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        zip.start_file(*name, options).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Replaces every occurrence of `from` by `to` (same length) in the archive's bytes.
fn patched(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i + from.len() <= out.len() {
        if &out[i..i + from.len()] == from {
            out[i..i + from.len()].copy_from_slice(to);
        }
        i += 1;
    }
    out
}

#[tokio::test]
async fn hostile_archives_are_refused_and_nothing_is_created() {
    let app = spawn_app().await;
    let id = recorded_session(&app).await;
    let good = export(&app, &id).await;
    let files = entries(&good);
    let (mic, manifest) = (entry(&files, "mic.wav"), entry(&files, "session.json"));
    let manifest_json: Value = serde_json::from_slice(manifest).unwrap();
    let mic_only = {
        let mut m = manifest_json.clone();
        m["tracks"] = json!([manifest_json["tracks"][0].clone()]);
        serde_json::to_vec(&m).unwrap()
    };
    assert_eq!(manifest_json["tracks"][0]["name"], "mic");
    // A header that says 10 more blocks than the file holds.
    let mut lying = mic.to_vec();
    let claimed = u32::from_le_bytes(lying[40..44].try_into().unwrap()) + 20;
    lying[40..44].copy_from_slice(&claimed.to_le_bytes());
    let lying_size = {
        let mut m: Value = serde_json::from_slice(&mic_only).unwrap();
        m["tracks"][0]["dataBytes"] = json!(4820);
        serde_json::to_vec(&m).unwrap()
    };
    let symlink = {
        let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default();
        zip.start_file("session.json", options).unwrap();
        zip.write_all(&mic_only).unwrap();
        zip.add_symlink("mic.wav", "/etc/passwd", options).unwrap();
        zip.finish().unwrap().into_inner()
    };
    let duplicate = patched(
        &archive_of(&[
            ("session.json", &mic_only),
            ("mic.wav", mic),
            ("mid.wav", mic),
        ]),
        b"mid.wav",
        b"mic.wav",
    );
    // The central directory's sizes for mic.wav claim about 4 GB (a zip bomb's declaration).
    let huge = {
        let plain = archive_of(&[("session.json", &mic_only), ("mic.wav", mic)]);
        let size = (mic.len() as u32).to_le_bytes();
        patched(
            &plain,
            &[&size[..], &size[..]].concat(),
            &[0xfe, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff, 0xff],
        )
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not a zip", b"this is not an archive".to_vec()),
        ("empty body", Vec::new()),
        ("truncated", good[..good.len() / 2].to_vec()),
        (
            "traversal name",
            archive_of(&[("session.json", &mic_only), ("../mic.wav", mic)]),
        ),
        (
            "absolute name",
            archive_of(&[("session.json", &mic_only), ("/tmp/mic.wav", mic)]),
        ),
        (
            "directory name",
            archive_of(&[("session.json", &mic_only), ("x/mic.wav", mic)]),
        ),
        ("symlink entry", symlink),
        ("declared 4 GB", huge),
        (
            "lying WAV header",
            archive_of(&[("session.json", &mic_only), ("mic.wav", &lying)]),
        ),
        (
            "size unlike manifest",
            archive_of(&[("session.json", &lying_size), ("mic.wav", mic)]),
        ),
        ("duplicate names", duplicate),
        ("no manifest", archive_of(&[("mic.wav", mic)])),
        (
            "manifest of the wrong shape",
            archive_of(&[("session.json", br#"{"title": 5}"#), ("mic.wav", mic)]),
        ),
        (
            "unlisted file",
            archive_of(&[
                ("session.json", &mic_only),
                ("mic.wav", mic),
                ("guest.wav", mic),
            ]),
        ),
        (
            "listed file missing",
            archive_of(&[("session.json", manifest), ("mic.wav", mic)]),
        ),
    ];
    let before = app.get_json("/api/sessions").await["total"].clone();
    let sessions_dir = app.data_dir.path().join("sessions");
    let dirs_before = std::fs::read_dir(&sessions_dir).unwrap().count();
    for (what, body) in cases {
        let response = app.import(body).await;
        assert_eq!(response.status(), 400, "{what}");
        assert_error(response, 400, "invalid_archive").await;
        assert_eq!(
            app.get_json("/api/sessions").await["total"],
            before,
            "{what}"
        );
        assert_eq!(
            std::fs::read_dir(&sessions_dir).unwrap().count(),
            dirs_before,
            "{what}: files were left in sessions/"
        );
    }
    let staging = app.data_dir.path().join("staging");
    let left = std::fs::read_dir(&staging).map_or(0, |dir| dir.count());
    assert_eq!(left, 0, "the staging area was not cleaned");
    assert_eq!(app.get("/healthz").await.status(), 200);
    assert_eq!(
        std::fs::read(app.track_path(&id, "mic")).unwrap(),
        mic,
        "the exported session's audio changed"
    );
}
