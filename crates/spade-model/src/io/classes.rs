//! A model's class list (`classes.txt`): one line per label id, `id name #rrggbb`. Custom
//! datasets carry one so that a served model names and colours its classes; it travels
//! in a checkpoint folder beside `opt.txt` and in a converted file's header.

use std::fmt::Write;

/// Longest class list read: more lines than any dataset's `label_nc`.
pub const MAX_CLASSES: usize = 4096;

/// One label id's name and display colour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedClass {
    pub name: String,
    pub rgb: [u8; 3],
}

/// Classes in label-id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassList(pub Vec<NamedClass>);

impl ClassList {
    /// Parses `classes.txt`; the error names the line.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Vec::new();
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let line_no = n + 1;
            if out.len() == MAX_CLASSES {
                return Err(format!("more than {MAX_CLASSES} classes"));
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [id, name, colour] = fields[..] else {
                return Err(format!(
                    "line {line_no}: expected `id name #rrggbb`, got `{line}`"
                ));
            };
            let id: usize = id
                .parse()
                .map_err(|_| format!("line {line_no}: id `{id}` is not a number"))?;
            if id != out.len() {
                return Err(format!(
                    "line {line_no}: expected id {}, got {id}",
                    out.len()
                ));
            }
            let hex = colour
                .strip_prefix('#')
                .filter(|h| h.len() == 6 && h.chars().all(|c| c.is_ascii_hexdigit()))
                .ok_or_else(|| format!("line {line_no}: colour `{colour}` is not #rrggbb"))?;
            let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).expect("six hex digits");
            out.push(NamedClass {
                name: name.to_string(),
                rgb: [byte(0), byte(2), byte(4)],
            });
        }
        Ok(Self(out))
    }

    /// The `classes.txt` text.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        for (id, c) in self.0.iter().enumerate() {
            let [r, g, b] = c.rgb;
            writeln!(text, "{id} {} #{r:02x}{g:02x}{b:02x}", c.name).expect("writing to a String");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_lists_round_trip() {
        let text = "0 sky #5fdbff\n1 sea #363ea7\n";
        let list = ClassList::parse(text).unwrap();
        assert_eq!(
            list.0[1],
            NamedClass {
                name: "sea".into(),
                rgb: [54, 62, 167]
            }
        );
        assert_eq!(list.to_text(), text);
    }

    #[test]
    fn bad_class_lists_are_refused_with_the_line() {
        for (text, needle) in [
            ("0 sky #5fdbff\n2 sea #363ea7\n", "line 2: expected id 1"),
            ("0 sky 5fdbff\n", "#rrggbb"),
            ("0 sky\n", "expected `id name #rrggbb`"),
            ("x sky #5fdbff\n", "not a number"),
        ] {
            let err = ClassList::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
