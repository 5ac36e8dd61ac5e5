//! "Did you mean": the name the schema declares that is closest to one it
//! does not, for every place a caller or an operator writes a name (a
//! request, a route, `mandate check`, `entities.sources`).

/// Longest name a suggestion is looked for: edit distance costs the product
/// of the lengths, and a longer name is no typo.
const MAX_SUGGESTED_LEN: usize = 64;

/// "the schema declares no {what} `{name}`", with the closest of `known`
/// (within three edits, compared case-insensitively and with a qualified
/// type's last part too) as a suggestion.
pub fn unknown_name<S: AsRef<str>>(
    what: &str,
    name: &str,
    known: impl IntoIterator<Item = S>,
) -> String {
    match closest(name, known) {
        Some(candidate) => {
            format!("the schema declares no {what} `{name}` (did you mean `{candidate}`?)")
        }
        None => format!("the schema declares no {what} `{name}`"),
    }
}

/// The closest of `known` to `name`, within three edits.
pub fn closest<S: AsRef<str>>(name: &str, known: impl IntoIterator<Item = S>) -> Option<String> {
    if name.len() > MAX_SUGGESTED_LEN {
        return None;
    }
    let name = name.to_lowercase();
    known
        .into_iter()
        .map(|candidate| {
            let candidate = candidate.as_ref();
            // A type may be written unqualified: compare with its last part too.
            let short = candidate.rsplit("::").next().unwrap_or(candidate);
            let distance = |known: &str| strsim::levenshtein(&known.to_lowercase(), &name);
            (
                distance(candidate).min(distance(short)),
                candidate.to_owned(),
            )
        })
        .filter(|(distance, _)| *distance <= 3)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_gets_the_closest_name_and_a_stranger_gets_none() {
        let actions = ["place_order", "cancel_order", "view_account"];
        assert_eq!(
            unknown_name("action", "plce_order", actions),
            "the schema declares no action `plce_order` (did you mean `place_order`?)"
        );
        assert_eq!(
            unknown_name("action", "transfer_everything", actions),
            "the schema declares no action `transfer_everything`"
        );
        assert_eq!(
            closest("acount", ["Brokerage::Account", "Brokerage::User"]).as_deref(),
            Some("Brokerage::Account"),
            "an unqualified, lower-case type is compared with the last part"
        );
        assert_eq!(
            closest(&"x".repeat(65), ["x"]),
            None,
            "no search on long names"
        );
    }
}
