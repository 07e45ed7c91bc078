//! The dashboard: one self-contained HTML page (inline CSS and JavaScript, no CDN, no build
//! step) compiled into the binary. It loads `/api/state` once and then follows the
//! `/api/events` server-sent events; acknowledging an alert posts to `/api/alerts/ack` with the
//! token the operator types in (kept in the browser's session storage only).

use axum::response::Html;

/// The page's source.
pub const PAGE: &str = include_str!("dashboard.html");

/// `GET /`
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}
