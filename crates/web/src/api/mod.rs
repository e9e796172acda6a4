//! The `/api/v1` resources, one module per area. Access rules are not here: each route
//! is registered in `router` under its group's rule.

pub(crate) mod frames;
pub(crate) mod privacy;
pub(crate) mod users;
pub(crate) mod work;

/// Page size when none is asked for, and the most a page may hold.
pub(crate) const PAGE: u32 = 100;
pub(crate) const MAX_PAGE: u32 = 500;

/// A `?limit=` checked: pages are cursor-based (`after` an id) and bounded.
pub(crate) fn limit(limit: Option<u32>) -> Result<u32, crate::ApiError> {
    match limit {
        Some(0) => Err(crate::ApiError::bad_request("limit must be at least 1")),
        Some(n) if n > MAX_PAGE => Err(crate::ApiError::bad_request(format!("limit must be at most {MAX_PAGE}"))),
        n => Ok(n.unwrap_or(PAGE)),
    }
}
