//! Approval pages: the link a reviewer opens, `GET /approvals/{pipeline}/{stage}/{action}?token=…`,
//! shows what waits (pipeline, stage, action, the `CustomData` summary, the link to review,
//! the deadline) with Approve and Reject buttons; the buttons POST a form to the same address.
//!
//! A GET never decides anything: mail scanners and link previews open links on their own. The
//! token in the link is the capability, as it is for `PutApprovalResult`; pages are never cached,
//! never framed, load nothing from elsewhere, and send no referrer (the address holds the
//! token).

use lambda_http::http::{HeaderValue, StatusCode};
use lambda_http::{Body, Response};
use penstock_core::engine::{ActionStatus, PipelineState, Timestamp};

/// The target of an approval page: `/…/approvals/{pipeline}/{stage}/{action}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageTarget {
    pub pipeline: String,
    pub stage: String,
    pub action: String,
}

impl PageTarget {
    /// The last three segments after `approvals`, percent-decoded; `None` for any other path.
    pub fn from_path(path: &str) -> Option<Self> {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let at = segments.iter().rposition(|s| *s == "approvals")?;
        let rest = &segments[at + 1..];
        let [pipeline, stage, action] = rest else {
            return None;
        };
        let decode = |segment: &str| {
            percent_encoding::percent_decode_str(segment)
                .decode_utf8()
                .ok()
                .map(|s| s.into_owned())
                .filter(|s| !s.is_empty())
        };
        Some(Self {
            pipeline: decode(pipeline)?,
            stage: decode(stage)?,
            action: decode(action)?,
        })
    }
}

/// What an approval page shows of a waiting approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub execution_id: String,
    pub summary: Option<String>,
    pub review_url: Option<String>,
    pub deadline: Option<Timestamp>,
}

/// The approval waiting on `token` at the target, if one is.
pub fn waiting(state: &PipelineState, target: &PageTarget, token: &str) -> Option<Waiting> {
    state.executions.values().find_map(|execution| {
        let action = execution
            .stages
            .iter()
            .filter(|s| s.name == target.stage)
            .flat_map(|s| s.actions.iter())
            .find(|a| a.name == target.action)?;
        let open = action.status == ActionStatus::InProgress
            && action.token.as_deref().is_some_and(|open| {
                // Compared in constant time: the token is the capability.
                constant_time_eq(open.as_bytes(), token.as_bytes())
            });
        open.then(|| Waiting {
            execution_id: execution.id.clone(),
            summary: action.external.summary.clone(),
            review_url: action.external.url.clone(),
            deadline: action.deadline,
        })
    })
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(a.ct_eq(b))
}

fn escape(text: &str) -> String {
    html_escape::encode_safe(text).into_owned()
}

/// Only http(s) links are shown as links; anything else (`javascript:` …) is shown as text.
fn link(url: &str) -> String {
    let lower = url.trim().to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        format!(
            "<a href=\"{}\" rel=\"noopener noreferrer\">{}</a>",
            html_escape::encode_double_quoted_attribute(url.trim()),
            escape(url)
        )
    } else {
        escape(url)
    }
}

fn page(status: StatusCode, title: &str, body: &str) -> Response<Body> {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:40rem;\
         margin:2rem auto;padding:0 1rem}}dt{{font-weight:600}}button{{font-size:1rem;\
         padding:.5rem 1.5rem;margin-right:1rem}}textarea{{width:100%}}</style></head>\
         <body><h1>{title}</h1>{body}</body></html>\n",
        title = escape(title),
    );
    let mut response = Response::new(Body::from(html));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in [
        ("content-type", "text/html; charset=utf-8"),
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        (
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The page of a waiting approval, with its two buttons.
pub fn waiting_page(target: &PageTarget, token: &str, waiting: &Waiting) -> Response<Body> {
    let mut facts = format!(
        "<dl><dt>Pipeline</dt><dd>{}</dd><dt>Stage</dt><dd>{}</dd><dt>Action</dt><dd>{}</dd>\
         <dt>Execution</dt><dd>{}</dd>",
        escape(&target.pipeline),
        escape(&target.stage),
        escape(&target.action),
        escape(&waiting.execution_id),
    );
    if let Some(summary) = &waiting.summary {
        facts.push_str(&format!("<dt>Summary</dt><dd>{}</dd>", escape(summary)));
    }
    if let Some(url) = &waiting.review_url {
        facts.push_str(&format!("<dt>To review</dt><dd>{}</dd>", link(url)));
    }
    if let Some(deadline) = waiting.deadline {
        facts.push_str(&format!(
            "<dt>Decide before</dt><dd>{}</dd>",
            escape(&deadline.to_iso8601())
        ));
    }
    facts.push_str("</dl>");
    let form = format!(
        "<form method=\"post\"><input type=\"hidden\" name=\"token\" value=\"{}\">\
         <p><label for=\"summary\">Comment</label><br>\
         <textarea id=\"summary\" name=\"summary\" rows=\"3\" maxlength=\"512\"></textarea></p>\
         <button type=\"submit\" name=\"status\" value=\"Approved\">Approve</button>\
         <button type=\"submit\" name=\"status\" value=\"Rejected\">Reject</button></form>",
        html_escape::encode_double_quoted_attribute(token)
    );
    page(
        StatusCode::OK,
        "Approval waiting",
        &format!("{facts}{form}"),
    )
}

/// The page shown for a link whose approval is not waiting (decided, expired, or never was).
pub fn not_waiting_page() -> Response<Body> {
    page(
        StatusCode::NOT_FOUND,
        "No approval waiting",
        "<p>This link does not lead to an approval that is waiting: it was decided or timed out, \
         or the link is not complete.</p>",
    )
}

/// The page after a decision.
pub fn decided_page(target: &PageTarget, approved: bool) -> Response<Body> {
    let verb = if approved { "approved" } else { "rejected" };
    page(
        StatusCode::OK,
        if approved { "Approved" } else { "Rejected" },
        &format!(
            "<p>{} in stage {} of pipeline {} was {verb}.</p>",
            escape(&target.action),
            escape(&target.stage),
            escape(&target.pipeline)
        ),
    )
}

/// A page for a refused or failed form decision.
pub fn error_page(status: StatusCode, message: &str) -> Response<Body> {
    page(
        status,
        "The decision was not recorded",
        &format!("<p>{}</p>", escape(message)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_come_from_the_last_three_segments_after_approvals() {
        assert_eq!(
            PageTarget::from_path("/prod/approvals/my-app/Deploy%20Gate/Review"),
            Some(PageTarget {
                pipeline: "my-app".into(),
                stage: "Deploy Gate".into(),
                action: "Review".into(),
            })
        );
        assert_eq!(PageTarget::from_path("/approvals/a/b"), None);
        assert_eq!(PageTarget::from_path("/approvals/a/b/c/d"), None);
        assert_eq!(PageTarget::from_path("/other/a/b/c"), None);
    }

    #[test]
    fn only_web_links_are_linked_and_everything_is_escaped() {
        assert_eq!(
            link("javascript:alert(1)"),
            "javascript:alert(1)",
            "not a link"
        );
        let linked = link("https://example.com/?a=1&b=\"2\"");
        assert!(linked.starts_with("<a href=\"https://example.com/?a=1&amp;b=&quot;2&quot;\""));
        assert_eq!(escape("<script>"), "&lt;script&gt;");
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"token-1", b"token-1"));
        assert!(!constant_time_eq(b"token-1", b"token-2"));
        assert!(!constant_time_eq(b"token-1", b"token-12"));
    }
}
