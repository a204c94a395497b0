package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"strings"
	"time"
)

// The chart is drawn with the standard library only: one panel per
// workload and figure (throughput, p99 latency), the checkpoint interval
// on the x axis, one line per contender; the limit, which has no
// interval, is a dashed horizontal line. Text uses a small built-in 5×7
// upper-case bitmap font.

var palette = map[string]color.RGBA{
	"limit":     {110, 110, 110, 255},
	"ceiling":   {190, 190, 190, 255},
	"pipe":      {80, 80, 80, 255},
	"franz-txn": {31, 119, 180, 255},
	"kstreams":  {255, 127, 14, 255},
	"flink":     {148, 103, 189, 255},
	"onceflow":  {214, 39, 40, 255},
	// The distributed contenders, when chosen with -contenders.
	"onceflow-s3":    {227, 119, 194, 255},
	"onceflow-dist1": {44, 160, 44, 255},
	"onceflow-dist2": {140, 86, 75, 255},
	"onceflow-dist3": {23, 190, 207, 255},
}

type canvas struct{ img *image.RGBA }

func (c *canvas) set(x, y int, col color.RGBA) {
	if image.Pt(x, y).In(c.img.Rect) {
		c.img.SetRGBA(x, y, col)
	}
}

func (c *canvas) rect(x0, y0, x1, y1 int, col color.RGBA) {
	for y := y0; y < y1; y++ {
		for x := x0; x < x1; x++ {
			c.set(x, y, col)
		}
	}
}

// line draws a line of width w; dash > 0 leaves gaps of that length.
func (c *canvas) line(x0, y0, x1, y1, w int, col color.RGBA, dash int) {
	dx, dy := float64(x1-x0), float64(y1-y0)
	n := int(math.Max(math.Abs(dx), math.Abs(dy)))
	for i := 0; i <= n; i++ {
		if dash > 0 && (i/dash)%2 == 1 {
			continue
		}
		t := 0.0
		if n > 0 {
			t = float64(i) / float64(n)
		}
		x, y := x0+int(math.Round(dx*t)), y0+int(math.Round(dy*t))
		c.rect(x-w/2, y-w/2, x-w/2+w, y-w/2+w, col)
	}
}

// text draws s at (x, y) (top left) with each font pixel scale×scale.
func (c *canvas) text(x, y int, s string, scale int, col color.RGBA) {
	for _, r := range strings.ToUpper(s) {
		g, ok := glyphs[r]
		if !ok {
			g = glyphs['?']
		}
		for row, bits := range g {
			for colIdx, b := range bits {
				if b == '#' {
					c.rect(x+colIdx*scale, y+row*scale, x+(colIdx+1)*scale, y+(row+1)*scale, col)
				}
			}
		}
		x += 6 * scale
	}
}

func textWidth(s string, scale int) int { return len([]rune(s)) * 6 * scale }

func writeChart(path string, rep *report) error {
	const (
		panelW, panelH = 620, 360
		marginL        = 110
		marginT        = 60
		gapX, gapY     = 60, 70
		legendH        = 90
	)
	rows := len(rep.Workloads)
	if rows == 0 || len(rep.Intervals) == 0 {
		return nil
	}
	width := marginL + 2*panelW + gapX + 40
	height := marginT + rows*panelH + (rows-1)*gapY + legendH + 40
	c := &canvas{img: image.NewRGBA(image.Rect(0, 0, width, height))}
	white := color.RGBA{255, 255, 255, 255}
	black := color.RGBA{30, 30, 30, 255}
	grey := color.RGBA{225, 225, 225, 255}
	c.rect(0, 0, width, height, white)
	c.text(marginL, 18, "onceflow benchmark: throughput and p99 latency against the checkpoint interval", 2, black)

	for row, w := range rep.Workloads {
		for col, metric := range []string{"throughput", "p99"} {
			x0 := marginL + col*(panelW+gapX)
			y0 := marginT + row*(panelH+gapY) + 20
			title := w + " - throughput (records/s, higher is better)"
			if metric == "p99" {
				title = w + " - p99 latency (ms, lower is better)"
			}
			c.text(x0, y0-22, title, 2, black)
			value := func(r *result) float64 {
				if metric == "p99" {
					if r.LatencyN == 0 {
						return 0
					}
					return r.P99MS
				}
				return r.Throughput
			}
			top := 0.0
			for _, r := range rep.Results {
				if r.Workload == w && r.Err == "" {
					top = math.Max(top, value(r))
				}
			}
			if metric == "p99" {
				for _, iv := range rep.Intervals {
					top = math.Max(top, float64(iv.Milliseconds()+50))
				}
			}
			if top == 0 {
				top = 1
			}
			top = niceCeil(top * 1.08)
			plotH := panelH - 50
			yOf := func(v float64) int { return y0 + plotH - int(v/top*float64(plotH)) }
			// Grid and y labels.
			for i := 0; i <= 4; i++ {
				v := top * float64(i) / 4
				y := yOf(v)
				c.line(x0, y, x0+panelW, y, 1, grey, 0)
				label := compact(v)
				c.text(x0-textWidth(label, 2)-8, y-7, label, 2, black)
			}
			c.line(x0, y0, x0, y0+plotH, 2, black, 0)
			c.line(x0, y0+plotH, x0+panelW, y0+plotH, 2, black, 0)
			n := len(rep.Intervals)
			xOf := func(i int) int { return x0 + panelW*(2*i+1)/(2*n) }
			for i, iv := range rep.Intervals {
				label := iv.String()
				c.text(xOf(i)-textWidth(label, 2)/2, y0+plotH+12, label, 2, black)
			}
			if metric == "p99" {
				// The target: interval + 50 ms.
				for i, iv := range rep.Intervals {
					y := yOf(float64(iv.Milliseconds() + 50))
					c.line(xOf(i)-40, y, xOf(i)+40, y, 2, color.RGBA{0, 150, 0, 255}, 6)
				}
			}
			for _, name := range rep.Contenders {
				col := palette[name]
				cont := findContender(name)
				if cont == nil || !cont.jobs[w] {
					continue
				}
				if !cont.usesInterval {
					r := rep.find(name, w, 0)
					if r == nil || value(r) == 0 {
						continue
					}
					y := yOf(value(r))
					c.line(x0+4, y, x0+panelW-4, y, 3, col, 10)
					continue
				}
				px, py := -1, -1
				for i, iv := range rep.Intervals {
					r := rep.find(name, w, iv.Milliseconds())
					if r == nil || value(r) == 0 {
						px = -1
						continue
					}
					x, y := xOf(i), yOf(value(r))
					if px >= 0 {
						c.line(px, py, x, y, 3, col, 0)
					}
					c.rect(x-5, y-5, x+6, y+6, col)
					px, py = x, y
				}
			}
		}
	}
	// Legend.
	ly := marginT + rows*panelH + (rows-1)*gapY + 40
	lx := marginL
	for _, name := range rep.Contenders {
		col := palette[name]
		dash := 0
		if cont := findContender(name); cont != nil && !cont.usesInterval {
			dash = 10
		}
		c.line(lx, ly+7, lx+40, ly+7, 3, col, dash)
		c.text(lx+50, ly, name, 2, black)
		lx += 50 + textWidth(name, 2) + 40
	}
	c.line(lx, ly+7, lx+40, ly+7, 2, color.RGBA{0, 150, 0, 255}, 6)
	c.text(lx+50, ly, "p99 target", 2, black)
	c.text(marginL, ly+30, fmt.Sprintf("%s, %s", rep.Started.Format("2006-01-02"), modeName(rep)), 2, color.RGBA{90, 90, 90, 255})

	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, c.img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func modeName(rep *report) string {
	if rep.Quick {
		return "quick mode"
	}
	return "full run, " + rep.Took.Round(time.Second).String()
}

// niceCeil rounds up to 1, 2, 2.5 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func compact(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.3gK", v/1e3)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// glyphs is a 5×7 upper-case bitmap font.
var glyphs = map[rune][7]string{
	' ': {".....", ".....", ".....", ".....", ".....", ".....", "....."},
	'A': {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'B': {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."},
	'C': {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."},
	'D': {"####.", "#...#", "#...#", "#...#", "#...#", "#...#", "####."},
	'E': {"#####", "#....", "#....", "####.", "#....", "#....", "#####"},
	'F': {"#####", "#....", "#....", "####.", "#....", "#....", "#...."},
	'G': {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"},
	'H': {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'I': {".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'J': {"..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."},
	'K': {"#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"},
	'L': {"#....", "#....", "#....", "#....", "#....", "#....", "#####"},
	'M': {"#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"},
	'N': {"#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"},
	'O': {".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'P': {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."},
	'Q': {".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"},
	'R': {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"},
	'S': {".####", "#....", "#....", ".###.", "....#", "....#", "####."},
	'T': {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."},
	'U': {"#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'V': {"#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."},
	'W': {"#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."},
	'X': {"#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"},
	'Y': {"#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."},
	'Z': {"#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"},
	'0': {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."},
	'1': {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'2': {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"},
	'3': {"#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."},
	'4': {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."},
	'5': {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."},
	'6': {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."},
	'7': {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."},
	'8': {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."},
	'9': {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."},
	'.': {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."},
	',': {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."},
	':': {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."},
	'-': {".....", ".....", ".....", "#####", ".....", ".....", "....."},
	'_': {".....", ".....", ".....", ".....", ".....", ".....", "#####"},
	'/': {".....", "....#", "...#.", "..#..", ".#...", "#....", "....."},
	'(': {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."},
	')': {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."},
	'%': {"##...", "##..#", "...#.", "..#..", ".#...", "#..##", "...##"},
	'+': {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."},
	'=': {".....", ".....", "#####", ".....", "#####", ".....", "....."},
	'?': {".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."},
}
