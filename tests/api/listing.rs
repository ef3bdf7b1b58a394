//! The session list pages by seeking (tests of `GET /api/sessions` beyond rest.rs): whatever
//! the depth and the filter, a page holds exactly the rows `ORDER BY created_at DESC, id DESC
//! LIMIT .. OFFSET ..` gives, ties on `created_at` included, and `total` counts every match.

use chrono::TimeDelta;
use diesel::prelude::*;
use safetake::db;
use safetake::db::models::SessionRow;
use safetake::domain::{SessionId, SessionStatus};
use serde_json::Value;

use crate::helpers::*;

const SEEDED: usize = 240;

/// Sessions straight into the app's database, three at a time sharing one `created_at`, with
/// mixed statuses, so the pages cut through ties.
fn seed(conn: &mut db::DbConnection) {
    let base = safetake::domain::now() - TimeDelta::days(30);
    for index in 0..SEEDED {
        let created_at = base + TimeDelta::seconds((index / 3) as i64);
        let (status, completed_at) = match index % 4 {
            0 => (SessionStatus::Incomplete, None),
            1 => (SessionStatus::Active, None),
            _ => (SessionStatus::Completed, Some(created_at)),
        };
        let row = SessionRow {
            id: SessionId::new_random(),
            title: format!("seeded {index}"),
            status,
            created_at,
            // Active ones beat now, so the sweeper leaves them be during the test.
            last_heartbeat: if status == SessionStatus::Active {
                safetake::domain::now()
            } else {
                created_at
            },
            completed_at,
            stop_requested_at: None,
        };
        db::sessions::insert(conn, &row).expect("insert a seeded session");
    }
}

/// What plain OFFSET paging returns.
fn offset_page(
    conn: &mut db::DbConnection,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> Vec<String> {
    use safetake::db::schema::sessions;
    let mut query = sessions::table.select(sessions::id).into_boxed();
    if let Some(status) = status {
        query = query.filter(sessions::status.eq(status.to_string()));
    }
    query
        .order((sessions::created_at.desc(), sessions::id.desc()))
        .limit(limit)
        .offset(offset)
        .load::<String>(conn)
        .expect("the OFFSET query")
}

fn ids(page: &Value) -> Vec<String> {
    page["sessions"]
        .as_array()
        .expect("a sessions array")
        .iter()
        .map(|s| s["id"].as_str().expect("an id").to_string())
        .collect()
}

#[tokio::test]
async fn deep_pages_with_and_without_a_filter_match_offset_paging() {
    let app = spawn_app().await;
    let mut conn = app.db_connection();
    seed(&mut conn);
    for status in [None, Some("completed"), Some("incomplete"), Some("active")] {
        let total = match status {
            None => SEEDED,
            Some("completed") => SEEDED / 2,
            Some(_) => SEEDED / 4,
        };
        // First, middle (both halves: the seek walks from the nearer end), the last rows, the
        // exact end and past it; limits that end inside a tie and across the end.
        let offsets = [
            0,
            1,
            2,
            5,
            total / 2 - 1,
            total / 2,
            total / 2 + 1,
            total - 3,
            total - 1,
            total,
            total + 7,
        ];
        for offset in offsets {
            for limit in [1, 2, 4, 100] {
                let filter = status.map_or(String::new(), |s| format!("&status={s}"));
                let path = format!("/api/sessions?limit={limit}&offset={offset}{filter}");
                let page = app.get_json(&path).await;
                assert_eq!(page["total"], total, "{path}");
                let expected = offset_page(&mut conn, status, limit, offset as i64);
                assert_eq!(ids(&page), expected, "{path}");
            }
        }
    }
    // The whole list through the default page size, and page by page, is the same order.
    let everything = ids(&app.get_json("/api/sessions?limit=1000").await);
    assert_eq!(everything, offset_page(&mut conn, None, 1000, 0));
    let mut paged = Vec::new();
    for offset in (0..SEEDED).step_by(7) {
        paged.extend(ids(&app
            .get_json(&format!("/api/sessions?limit=7&offset={offset}"))
            .await));
    }
    assert_eq!(paged, everything);
}
