//! Display colours of label ids: the reference's colour map (`util.labelcolormap`).

/// The colour of label `i`: the bits of `i + 1` spread over r, g, b from the most
/// significant bit down (the PASCAL VOC colour map).
pub fn voc_colour(i: usize) -> [u8; 3] {
    let mut id = i + 1;
    let mut rgb = [0u8; 3];
    for j in 0..7 {
        for (c, value) in rgb.iter_mut().enumerate() {
            *value ^= (((id >> c) & 1) as u8) << (7 - j);
        }
        id >>= 3;
    }
    rgb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voc_colours_match_the_reference_map() {
        // labelcolormap: index 0 -> (128, 0, 0), 1 -> (0, 128, 0), 3 -> (0, 0, 128).
        assert_eq!(voc_colour(0), [128, 0, 0]);
        assert_eq!(voc_colour(1), [0, 128, 0]);
        assert_eq!(voc_colour(2), [128, 128, 0]);
        assert_eq!(voc_colour(3), [0, 0, 128]);
        assert_eq!(voc_colour(6), [128, 128, 128]);
    }
}
