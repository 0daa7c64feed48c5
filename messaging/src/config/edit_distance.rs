//! How far apart two spellings are: to suggest the key a typo meant.

/// Optimal string alignment distance: insertions, deletions, substitutions and transpositions
/// of adjacent characters (`PROT` is one step from `PORT`).
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitution = usize::from(a[i - 1] != b[j - 1]);
            let mut cost = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + substitution);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                cost = cost.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = cost;
        }
    }
    rows[a.len()][b.len()]
}

/// The candidate a typo of `written` most likely meant: the nearest one, if it is near enough
/// to be that (at most a third of `written`'s length away, at least one edit), else none:
/// suggesting an unrelated key would mislead more than help. The first of equally near ones.
pub(crate) fn nearest<'c>(
    written: &str,
    candidates: impl IntoIterator<Item = &'c str>,
) -> Option<&'c str> {
    let within = (written.chars().count() / 3).max(1);
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let cost = distance(written, candidate);
        if cost <= within && best.is_none_or(|(best_cost, _)| cost < best_cost) {
            best = Some((cost, candidate));
        }
    }
    best.map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpositions_count_once() {
        assert_eq!(distance("PROT", "PORT"), 1);
        assert_eq!(distance("order", "orders"), 1);
        assert_eq!(distance("", "abc"), 3);
    }

    #[test]
    fn only_a_near_candidate_is_suggested() {
        let candidates = ["fetch.max.bytes", "fetch.min.bytes", "acks"];
        assert_eq!(
            nearest("fetch.max.bytez", candidates),
            Some("fetch.max.bytes")
        );
        assert_eq!(nearest("ack", candidates), Some("acks"));
        assert_eq!(nearest("colour", candidates), None);
        assert_eq!(nearest("fetch.bytes", candidates), None);
    }
}
