//! Counts in messages: "1 layer", "2 layers", never "1 layers".

/// `count` followed by the noun in its number: `one` for 1, else `many`.
pub fn counted<N>(count: N, one: &str, many: &str) -> String
where
    N: std::fmt::Display + PartialEq + From<u8>,
{
    if count == N::from(1) {
        format!("1 {one}")
    } else {
        format!("{count} {many}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_the_rest_plural() {
        assert_eq!(counted(0_usize, "layer", "layers"), "0 layers");
        assert_eq!(counted(1_u64, "layer", "layers"), "1 layer");
        assert_eq!(
            counted(2_u32, "index entry", "index entries"),
            "2 index entries"
        );
    }
}
