// The one schema for every backend; kept by hand in step with migrations/.

diesel::table! {
    sessions (id) {
        id -> Text,
        title -> Text,
        status -> Text,
        created_at -> Timestamp,
        last_heartbeat -> Timestamp,
        completed_at -> Nullable<Timestamp>,
        stop_requested_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    tracks (session_id, name) {
        session_id -> Text,
        name -> Text,
        sample_rate -> Integer,
        channels -> Integer,
        format -> Text,
        data_bytes -> BigInt,
        created_at -> Timestamp,
        done -> Bool,
    }
}

diesel::table! {
    segments (session_id, track_name, seq) {
        session_id -> Text,
        track_name -> Text,
        seq -> Integer,
        start_offset -> BigInt,
        started_at -> Timestamp,
    }
}

diesel::table! {
    marks (session_id, track_name, byte_offset) {
        session_id -> Text,
        track_name -> Text,
        byte_offset -> BigInt,
        captured_at -> Double,
    }
}

diesel::table! {
    invites (id) {
        id -> Text,
        session_id -> Text,
        track -> Text,
        name -> Text,
        token_hash -> Text,
        created_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(tracks -> sessions (session_id));
diesel::joinable!(invites -> sessions (session_id));
diesel::allow_tables_to_appear_in_same_query!(sessions, tracks, segments, marks, invites);
