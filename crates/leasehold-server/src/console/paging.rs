//! Console lists: the sets shown whole, and the logs paged 100 rows at a time.

use leasehold_store::{Page, PageRequest};
use maud::{html, Markup};
use serde::Deserialize;

/// Every row of a listing, a page at a time, for the sets the console shows whole (a
/// workspace's licenses and applications, a license's live seats, the contacts to pick
/// from), which the business bounds. Logs (the audit log, a license's released seats,
/// the contacts list) are paged instead: [`log_page`].
pub(super) async fn whole<T, F, Fut>(mut fetch: F) -> leasehold_store::Result<Vec<T>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = leasehold_store::Result<Page<T>>>,
{
    let mut items = Vec::new();
    let mut request = PageRequest::first(PageRequest::MAX_LIMIT);
    loop {
        let page = fetch(request.clone()).await?;
        items.extend(page.items);
        match page.next_cursor {
            Some(next) => request.cursor = Some(next),
            None => return Ok(items),
        }
    }
}

/// Rows per page of a log in the console.
const LOG_PAGE: u32 = 100;

/// `?cursor=` of a paged console list.
#[derive(Debug, Default, Deserialize)]
pub(super) struct Cursor {
    pub(super) cursor: Option<String>,
}

/// The page of a log that starts at `cursor` (the first without one).
pub(super) fn log_page(cursor: Option<&str>) -> PageRequest {
    PageRequest {
        cursor: cursor.filter(|c| !c.is_empty()).map(String::from),
        limit: LOG_PAGE,
    }
}

/// The link to a log's next page, if there is one: `path` with `query` and the cursor.
pub(super) fn next_page(path: &str, query: &[(&str, &str)], next: Option<&str>) -> Markup {
    let Some(next) = next else {
        return html! {};
    };
    let mut params: Vec<(&str, &str)> = query
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .copied()
        .collect();
    params.push(("cursor", next));
    let href = format!(
        "{path}?{}",
        serde_urlencoded::to_string(&params).unwrap_or_default()
    );
    html! { p.next-page { a rel="next" href=(href) { "Older →" } } }
}
