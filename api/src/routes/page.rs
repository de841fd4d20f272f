//! Keyset pages by row id, newest first, as the list routes of the ledger (`runs`, `findings`)
//! take them: the `limit` and `before` parameters, and the `next` cursor of a page. A walk
//! that passes each `next` as `before` neither repeats nor skips a row while rows arrive.

use crate::ApiError;
use crate::params::Params;

/// The default page size.
const DEFAULT_LIMIT: i64 = 50;
/// The largest page size.
const MAX_LIMIT: i64 = 1000;

/// One page asked for: at most `limit` rows whose id is below `before` (all rows without it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageRequest {
    /// Page size, in `1..=1000`; 50 when not given.
    pub(crate) limit: i64,
    /// The previous page's `next`, if any.
    pub(crate) before: Option<i64>,
}

impl PageRequest {
    /// Takes `limit` and `before` from `params`, in that order.
    ///
    /// # Errors
    /// A 400 naming `limit` or `before` when it is not an integer in range, or given twice.
    pub(crate) fn take(params: &mut Params) -> Result<Self, ApiError> {
        let limit = params.int("limit", 1, MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
        let before = params.int("before", 1, i64::MAX)?;
        Ok(Self { limit, before })
    }

    /// The `next` cursor after `rows`, the page read for this request: the last row's id
    /// (`id_of`) when the page is full, `None` on the last page.
    pub(crate) fn next<T>(&self, rows: &[T], id_of: impl Fn(&T) -> i64) -> Option<i64> {
        if i64::try_from(rows.len()).unwrap_or(i64::MAX) >= self.limit {
            rows.last().map(id_of)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_full_page_has_a_next_cursor_the_id_of_its_last_row() {
        let request = PageRequest {
            limit: 3,
            before: None,
        };
        assert_eq!(request.next(&[9, 8, 7], |id| *id), Some(7));
        assert_eq!(request.next(&[9, 8], |id| *id), None);
        assert_eq!(request.next(&[] as &[i64], |id| *id), None);
    }
}
