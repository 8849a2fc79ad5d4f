//! What a model's label ids mean: class names and the colours of colour-coded label maps,
//! for the official datasets (COCO-Stuff 182, ADE20K 150, Cityscapes 35) and numbered
//! classes otherwise, unless the checkpoint carries its own list (`classes.txt`). Colours
//! follow the reference visualiser (`util.labelcolormap`).

use spade_model::io::palette::voc_colour;
use std::collections::HashMap;

use serde::Serialize;
use spade_model::{Checkpoint, Config};

#[derive(Debug, Clone, Serialize)]
pub struct Class {
    pub id: u32,
    pub name: String,
    /// The dataset's category (COCO-Stuff: thing/stuff; Cityscapes: flat, vehicle, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<&'static str>,
    /// `#rrggbb`.
    pub color: String,
    #[serde(skip)]
    pub rgb: [u8; 3],
}

/// A model's classes and the reverse colour lookup for colour-coded masks.
#[derive(Debug, Clone)]
pub struct ClassTable {
    pub classes: Vec<Class>,
    by_color: HashMap<[u8; 3], u32>,
}

const COCO_STUFF: &str = include_str!("../data/coco_stuff.txt");
const ADE20K: &str = include_str!("../data/ade20k.txt");
const CITYSCAPES: &str = include_str!("../data/cityscapes.txt");

/// The reference's fixed Cityscapes colours, one per label id.
const CITYSCAPES_COLORS: [[u8; 3]; 35] = [
    [0, 0, 0],
    [0, 0, 0],
    [0, 0, 0],
    [0, 0, 0],
    [0, 0, 0],
    [111, 74, 0],
    [81, 0, 81],
    [128, 64, 128],
    [244, 35, 232],
    [250, 170, 160],
    [230, 150, 140],
    [70, 70, 70],
    [102, 102, 156],
    [190, 153, 153],
    [180, 165, 180],
    [150, 100, 100],
    [150, 120, 90],
    [153, 153, 153],
    [153, 153, 153],
    [250, 170, 30],
    [220, 220, 0],
    [107, 142, 35],
    [152, 251, 152],
    [70, 130, 180],
    [220, 20, 60],
    [255, 0, 0],
    [0, 0, 142],
    [0, 0, 70],
    [0, 60, 100],
    [0, 0, 90],
    [0, 0, 110],
    [0, 80, 100],
    [0, 0, 230],
    [119, 11, 32],
    [0, 0, 142],
];

/// The colours the reference (and the GauGAN demo) gives the most painted COCO classes.
const COCO_COLORS: [(&str, [u8; 3]); 5] = [
    ("sea", [54, 62, 167]),
    ("sky-other", [95, 219, 255]),
    ("tree", [140, 104, 47]),
    ("clouds", [170, 170, 170]),
    ("grass", [29, 195, 49]),
];

impl ClassTable {
    /// The checkpoint's own class list where it carries one, else [`ClassTable::for_config`].
    pub fn for_checkpoint(checkpoint: &Checkpoint) -> Self {
        let Some(list) = &checkpoint.classes else {
            return Self::for_config(&checkpoint.config);
        };
        let classes = list
            .0
            .iter()
            .enumerate()
            .map(|(id, c)| Class {
                id: id as u32,
                name: c.name.clone(),
                group: None,
                color: format!("#{:02x}{:02x}{:02x}", c.rgb[0], c.rgb[1], c.rgb[2]),
                rgb: c.rgb,
            })
            .collect();
        Self::from_classes(classes)
    }

    pub fn for_config(config: &Config) -> Self {
        let count = config.label_channels();
        let names: Vec<&str> = match (config.dataset_mode.as_str(), config.label_nc) {
            ("coco", 182) => COCO_STUFF.lines().collect(),
            ("ade20k", 150) => ADE20K.lines().collect(),
            ("cityscapes", 35) => CITYSCAPES.lines().collect(),
            _ => Vec::new(),
        };
        let cityscapes = config.dataset_mode == "cityscapes" && config.label_nc == 35;
        let classes: Vec<Class> = (0..count)
            .map(|id| {
                let name = match names.get(id) {
                    Some(name) => name.to_string(),
                    None if id == config.label_nc => "unlabeled".to_string(),
                    None => format!("class {id}"),
                };
                let rgb = if cityscapes {
                    CITYSCAPES_COLORS[id]
                } else {
                    COCO_COLORS
                        .iter()
                        .find(|(n, _)| config.dataset_mode == "coco" && *n == name)
                        .map_or_else(|| voc_colour(id), |(_, c)| *c)
                };
                Class {
                    id: id as u32,
                    group: group(&config.dataset_mode, config.label_nc, id),
                    color: format!("#{:02x}{:02x}{:02x}", rgb[0], rgb[1], rgb[2]),
                    name,
                    rgb,
                }
            })
            .collect();
        Self::from_classes(classes)
    }

    fn from_classes(classes: Vec<Class>) -> Self {
        // Where two ids share a colour (Cityscapes' void classes), the first one wins.
        let mut by_color = HashMap::new();
        for class in &classes {
            by_color.entry(class.rgb).or_insert(class.id);
        }
        Self { classes, by_color }
    }

    pub fn id_of_color(&self, rgb: [u8; 3]) -> Option<u32> {
        self.by_color.get(&rgb).copied()
    }
}

/// Categories of the official datasets, for grouping the palette.
fn group(dataset: &str, label_nc: usize, id: usize) -> Option<&'static str> {
    match (dataset, label_nc) {
        // COCO-Stuff: ids 0-90 are the COCO "things", 91-181 the "stuff" classes.
        ("coco", 182) => Some(match id {
            0..=90 => "things",
            91..=181 => "stuff",
            _ => "unlabeled",
        }),
        // Cityscapes categories of labels.py.
        ("cityscapes", 35) => Some(match id {
            0..=6 => "void",
            7..=10 => "flat",
            11..=16 => "construction",
            17..=20 => "object",
            21..=22 => "nature",
            23 => "sky",
            24..=25 => "human",
            _ => "vehicle",
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_tables_have_names_and_distinct_colours() {
        for dataset in ["coco", "ade20k", "cityscapes"] {
            let config = Config::official(dataset).unwrap();
            let table = ClassTable::for_config(&config);
            assert_eq!(table.classes.len(), config.label_channels());
            assert!(table.classes.iter().all(|c| !c.name.starts_with("class ")));
            if dataset != "cityscapes" {
                assert_eq!(table.by_color.len(), table.classes.len(), "{dataset}");
            }
        }
        let coco = ClassTable::for_config(&Config::official("coco").unwrap());
        assert_eq!(coco.classes[0].name, "person");
        assert_eq!(coco.classes[154].name, "sea");
        assert_eq!(coco.classes[154].color, "#363ea7");
        assert_eq!(coco.classes[182].name, "unlabeled");
        let ade = ClassTable::for_config(&Config::official("ade20k").unwrap());
        assert_eq!(
            (ade.classes[1].name.as_str(), ade.classes[150].name.as_str()),
            ("wall", "flag")
        );
    }
}
