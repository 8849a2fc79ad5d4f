//! The landscape classes: label ids, names and painting colours (`classes.txt`).

use spade_model::io::classes::{ClassList, NamedClass};

/// One paintable class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LandscapeClass {
    pub id: u8,
    pub name: &'static str,
    pub rgb: [u8; 3],
}

macro_rules! classes {
    ($($id:literal $const:ident $name:literal [$r:literal, $g:literal, $b:literal];)*) => {
        $(pub const $const: u8 = $id;)*
        /// Every class, in label-id order.
        pub const CLASSES: &[LandscapeClass] = &[
            $(LandscapeClass { id: $id, name: $name, rgb: [$r, $g, $b] },)*
        ];
    };
}

// Colours as in the GauGAN demo where it has the class (sky, sea, clouds, grass, tree).
classes! {
    0 SKY "sky" [95, 219, 255];
    1 CLOUD "cloud" [170, 170, 170];
    2 MOUNTAIN "mountain" [134, 110, 170];
    3 SNOW "snow" [235, 240, 255];
    4 ROCK "rock" [110, 110, 110];
    5 GRASS "grass" [29, 195, 49];
    6 TREE "tree" [140, 104, 47];
    7 BUSH "bush" [190, 210, 60];
    8 SEA "sea" [54, 62, 167];
    9 WATER "water" [0, 160, 200];
    10 SAND "sand" [240, 200, 130];
    11 DIRT "dirt" [120, 70, 30];
}

/// Number of classes (the model's `label_nc`).
pub const NUM_CLASSES: usize = CLASSES.len();

// A GauGAN-style palette: at least ten classes to paint with.
const _: () = assert!(NUM_CLASSES >= 10);

/// The class list a checkpoint carries (`classes.txt`).
pub fn class_list() -> ClassList {
    ClassList(
        CLASSES
            .iter()
            .map(|c| NamedClass {
                name: c.name.to_string(),
                rgb: c.rgb,
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_table_is_consistent_and_round_trips() {
        for (i, c) in CLASSES.iter().enumerate() {
            assert_eq!(c.id as usize, i);
            assert!(CLASSES[..i]
                .iter()
                .all(|o| o.rgb != c.rgb && o.name != c.name));
        }
        let parsed = ClassList::parse(&class_list().to_text()).unwrap();
        assert_eq!(parsed.0.len(), NUM_CLASSES);
        assert_eq!(
            parsed.0[SEA as usize],
            NamedClass {
                name: "sea".into(),
                rgb: [54, 62, 167]
            }
        );
    }
}
