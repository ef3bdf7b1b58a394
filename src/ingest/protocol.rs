//! The socket protocol as types: the commands a client sends (text), the messages the server
//! sends, and why a socket closes. Every close code and error string lives here and nowhere else.

use serde::{Deserialize, Serialize};

/// Why the server closes a socket. Each reason owns its close code and, when the client is owed
/// an explanation first, the `code` of the `{"type":"error"}` message sent before the close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The session was finished. The only reason for 1000.
    Finished,
    /// The server is shutting down; the client comes back.
    ShuttingDown,
    /// The client broke the WebSocket framing itself.
    ProtocolError,
    /// A text message that is not a command.
    BadMessage,
    /// A binary frame shorter than 8 bytes or not block-aligned.
    BadFrame,
    /// A message over the size limit.
    TooBig,
    /// The server could not store audio.
    StorageFailed,
    /// A newer socket took the track over.
    Replaced,
    /// A frame past the stored size: nothing written.
    Gap,
    /// The session was silent past its timeout.
    TimedOut,
    /// The WAV file would pass 4 GiB.
    TrackFull,
    /// The invite the socket was opened with was revoked, or its session deleted.
    Revoked,
}

impl CloseReason {
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Finished => 1000,
            CloseReason::ShuttingDown => 1001,
            CloseReason::ProtocolError => 1002,
            CloseReason::BadMessage => 1003,
            CloseReason::BadFrame => 1007,
            CloseReason::TooBig => 1009,
            CloseReason::StorageFailed => 1011,
            CloseReason::Replaced => 4001,
            CloseReason::Gap => 4009,
            CloseReason::TimedOut => 4408,
            CloseReason::TrackFull => 4413,
            CloseReason::Revoked => 4403,
        }
    }

    /// The error `code` the client hears before the close, for the reasons that have one.
    pub fn error_code(self) -> Option<&'static str> {
        match self {
            CloseReason::BadMessage => Some("bad_message"),
            CloseReason::BadFrame => Some("bad_frame"),
            CloseReason::TooBig => Some("too_big"),
            CloseReason::StorageFailed => Some("storage_failed"),
            CloseReason::Gap => Some("gap"),
            CloseReason::TrackFull => Some("track_full"),
            CloseReason::Finished
            | CloseReason::ShuttingDown
            | CloseReason::ProtocolError
            | CloseReason::Replaced
            | CloseReason::TimedOut
            | CloseReason::Revoked => None,
        }
    }
}

/// A close the server owes a client: the reason, and what the error message before it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closing {
    pub reason: CloseReason,
    pub message: String,
    /// Only for a gap: the offset the next frame must carry.
    pub expected_offset: Option<u64>,
}

impl Closing {
    pub fn new(reason: CloseReason, message: impl Into<String>) -> Closing {
        Closing {
            reason,
            message: message.into(),
            expected_offset: None,
        }
    }

    /// A close that owes no explanation (1000, 1001, 4001, 4408).
    pub fn quiet(reason: CloseReason) -> Closing {
        Closing::new(reason, "")
    }

    pub fn gap(frame_offset: u64, stored: u64) -> Closing {
        Closing {
            expected_offset: Some(stored),
            ..Closing::new(
                CloseReason::Gap,
                format!("frame at offset {frame_offset} but the track holds {stored} bytes"),
            )
        }
    }

    /// The `{"type":"error"}` message sent before the close frame, if the reason has one.
    pub fn error_message(&self) -> Option<ServerMessage<'_>> {
        let code = self.reason.error_code()?;
        Some(ServerMessage::Error {
            code,
            message: &self.message,
            expected_offset: self.expected_offset,
        })
    }
}

/// What the server sends, as text.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage<'a> {
    #[serde(rename_all = "camelCase")]
    Ready {
        session_id: &'a str,
        track: &'a str,
        offset: u64,
        sample_rate: u32,
        channels: u16,
        format: &'a str,
    },
    Ack {
        offset: u64,
    },
    Finished,
    /// The host stopped the recording for everyone: stop capturing, send the rest, then `done`.
    Stop,
    /// The answer to a client's `clock`: its time back, and the server's (ms since the epoch).
    #[serde(rename_all = "camelCase")]
    Clock {
        client_time: f64,
        server_time: f64,
    },
    #[serde(rename_all = "camelCase")]
    Error {
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        expected_offset: Option<u64>,
    },
}

impl ServerMessage<'_> {
    /// A command this socket may not give (a guest's `finish`); the socket stays open.
    pub fn forbidden(message: &str) -> ServerMessage<'_> {
        ServerMessage::Error {
            code: "forbidden",
            message,
            expected_offset: None,
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing these plain shapes cannot fail; an empty object would be ignored anyway.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// What a client may send as text. Unknown extra fields are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ClientCommand {
    Flush,
    Finish,
    /// The client holds this many bytes of the track that the server has not acked.
    Backlog {
        bytes: u64,
    },
    /// The client has sent all it will send.
    Done,
    /// A clock exchange: the server answers at once with its own time.
    #[serde(rename_all = "camelCase")]
    Clock {
        client_time: f64,
    },
    /// The sample at byte `offset` was captured at server time `captured_at` (ms since the
    /// epoch). Checked here, stored in batches (see `Registry::push_mark`).
    #[serde(rename_all = "camelCase")]
    Mark {
        offset: u64,
        captured_at: f64,
    },
}

/// A text message over this is refused with 1009 before it is parsed.
pub const MAX_TEXT_BYTES: usize = 4096;

impl ClientCommand {
    /// Parses one text message, or says why the socket must close.
    pub fn parse(text: &str) -> Result<ClientCommand, Closing> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(Closing::new(
                CloseReason::TooBig,
                "a text message is at most 4 KiB",
            ));
        }
        serde_json::from_str(text).map_err(|_| {
            Closing::new(
                CloseReason::BadMessage,
                "expected a command: flush, finish, backlog (with bytes), done, clock or mark",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_with_extra_fields_and_junk_is_a_bad_message() {
        assert_eq!(
            ClientCommand::parse(r#"{"type":"flush","why":1}"#),
            Ok(ClientCommand::Flush)
        );
        assert_eq!(
            ClientCommand::parse(r#"{"type":"finish"}"#),
            Ok(ClientCommand::Finish)
        );
        assert_eq!(
            ClientCommand::parse(r#"{"type":"backlog","bytes":9600}"#),
            Ok(ClientCommand::Backlog { bytes: 9600 })
        );
        assert_eq!(
            ClientCommand::parse(r#"{"type":"done"}"#),
            Ok(ClientCommand::Done)
        );
        for junk in [
            "",
            "flush",
            r#"{"type":"FLUSH"}"#,
            r#"{"kind":"flush"}"#,
            "[]",
            r#"{"type":"backlog"}"#,
            r#"{"type":"backlog","bytes":-1}"#,
            r#"{"type":"backlog","bytes":1.5}"#,
        ] {
            let closing = ClientCommand::parse(junk).unwrap_err();
            assert_eq!(closing.reason, CloseReason::BadMessage, "{junk}");
        }
        let long = format!(r#"{{"type":"flush","pad":"{}"}}"#, "x".repeat(5000));
        assert_eq!(
            ClientCommand::parse(&long).unwrap_err().reason,
            CloseReason::TooBig
        );
    }

    #[test]
    fn server_messages_are_the_contracts_json() {
        let gap = Closing::gap(960, 480);
        assert_eq!(
            gap.error_message().unwrap().to_json(),
            r#"{"type":"error","code":"gap","message":"frame at offset 960 but the track holds 480 bytes","expectedOffset":480}"#
        );
        assert_eq!(Closing::quiet(CloseReason::Replaced).error_message(), None);
        assert_eq!(
            ServerMessage::Ack { offset: 9 }.to_json(),
            r#"{"type":"ack","offset":9}"#
        );
        assert_eq!(ServerMessage::Finished.to_json(), r#"{"type":"finished"}"#);
        assert_eq!(ServerMessage::Stop.to_json(), r#"{"type":"stop"}"#);
        assert_eq!(
            ServerMessage::forbidden("no").to_json(),
            r#"{"type":"error","code":"forbidden","message":"no"}"#
        );
        let ready = ServerMessage::Ready {
            session_id: "s",
            track: "mic",
            offset: 0,
            sample_rate: 48000,
            channels: 1,
            format: "s16le",
        };
        assert_eq!(
            ready.to_json(),
            r#"{"type":"ready","sessionId":"s","track":"mic","offset":0,"sampleRate":48000,"channels":1,"format":"s16le"}"#
        );
    }
}
