//! Page pieces every server-rendered page shares: the document around a page, and the
//! recording figures the recorder and the guest page both show (their scripts fill them in).

use maud::{html, Markup, DOCTYPE};

/// A whole page: head (no icon to fetch, our one stylesheet, the page's module script), then
/// the page's own header and main content.
pub fn document(
    title: &str,
    script: Option<&str>,
    body_class: Option<&str>,
    header: Markup,
    main: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · safetake" }
                // No icon to fetch: the browser would ask for /favicon.ico and log a 404.
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/static/style.css";
                @if let Some(script) = script {
                    script type="module" src=(script) {}
                }
            }
            body class=[body_class] {
                (header)
                main { (main) }
            }
        }
    }
}

/// Elapsed time, connection state and what is not yet saved, as `static/ui.js` fills them.
pub fn recording_stats() -> Markup {
    html! {
        dl.stats {
            div { dt { "Elapsed" } dd #elapsed data-testid="elapsed" { "0:00.0" } }
            div {
                dt { "Connection" }
                dd #connection data-testid="connection" data-state="idle" { "idle" }
            }
            div { dt { "Not yet saved" } dd #unacked data-testid="unacked" { "0.0 s" } }
        }
    }
}
