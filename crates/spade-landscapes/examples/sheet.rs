//! A contact sheet of generated pairs (image above its colour-coded labels), for eyeballing.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (seed, n, size, out) = (
        args[1].parse().unwrap(),
        args[2].parse::<usize>().unwrap(),
        args[3].parse().unwrap(),
        &args[4],
    );
    let mut sheet = image::RgbImage::new((size * n) as u32, (size * 2) as u32);
    for i in 0..n {
        let p = spade_landscapes::generate(seed, i as u64, size);
        for y in 0..size {
            for x in 0..size {
                let j = y * size + x;
                let c = &p.image[j * 3..j * 3 + 3];
                sheet.put_pixel(
                    (i * size + x) as u32,
                    y as u32,
                    image::Rgb([c[0], c[1], c[2]]),
                );
                let l = spade_landscapes::CLASSES[p.labels[j] as usize].rgb;
                sheet.put_pixel((i * size + x) as u32, (size + y) as u32, image::Rgb(l));
            }
        }
    }
    sheet.save(out).unwrap();
}
