package apidoc

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// skipDir reports whether packages in (or under) a directory named name
// are left out: internal packages cannot be imported from outside the
// module; bench, scripts and integration hold tools and tests, not a
// library; testdata and vendor hold no packages of the module, and the go
// tool ignores names starting with "." or "_".
func skipDir(name string) bool {
	switch name {
	case "internal", "bench", "scripts", "integration", "testdata", "vendor":
		return true
	}
	return strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")
}

// TestExportedIdentifiersAreDocumented walks the module from its root and
// fails naming, by file and line, every exported identifier of a public
// package without a doc comment.
func TestExportedIdentifiersAreDocumented(t *testing.T) {
	root := moduleRoot(t)
	var missing []string
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && skipDir(name) {
				return filepath.SkipDir
			}
			// A nested module is not part of this one.
			if path != root {
				if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
					return filepath.SkipDir
				}
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		fset := token.NewFileSet()
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		if f.Name.Name == "main" {
			return nil
		}
		files++
		for _, u := range undocumented(f) {
			pos := fset.Position(u.pos)
			rel, err := filepath.Rel(root, pos.Filename)
			if err != nil {
				rel = pos.Filename
			}
			missing = append(missing, rel+":"+strconv.Itoa(pos.Line)+": "+u.what)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", root, err)
	}
	if files == 0 {
		t.Fatalf("no package files found under %s: is it the module root?", root)
	}
	if len(missing) > 0 {
		t.Errorf("exported identifiers without a doc comment: %d (write one starting with the name, stating the contract and the failure behaviour):\n\t%s",
			len(missing), strings.Join(missing, "\n\t"))
	}
}

// TestRule checks the rule itself on a small file: what counts as
// documented and what does not.
func TestRule(t *testing.T) {
	const src = `package p

// Documented is documented.
func Documented() {}

func Bare() {}

//go:noinline
func OnlyDirective() {}

func unexported() {}

type hidden struct{}

func (hidden) Exported() {}

// T is documented.
type T struct{}

func (T) Bare() {}

func (*T) PtrBare() {}

// Doc is documented.
func (T) Doc() {}

// G is generic.
type G[K comparable, V any] struct{}

func (G[K, V]) Bare() {}

type BareType int

// Grouped types share the block's doc.
type (
	A int
	B int
)

type (
	// C is documented.
	C int
	D int
)

// Block documents every constant in it.
const (
	K1 = iota
	K2
)

const (
	// L1 is documented.
	L1 = iota
	L2 // a trailing comment is not a doc comment
	l3
)

const Single = 1

// V is documented.
var V = 1

var W, x = 1, 2
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, u := range undocumented(f) {
		got = append(got, u.what)
	}
	want := []string{
		"func Bare",
		"func OnlyDirective",
		"method T.Bare",
		"method T.PtrBare",
		"method G.Bare",
		"type BareType",
		"type D",
		"const L2",
		"const Single",
		"var W",
	}
	if strings.Join(got, "; ") != strings.Join(want, "; ") {
		t.Errorf("undocumented:\n got %q\nwant %q", got, want)
	}
}

// finding is one exported identifier without a doc comment.
type finding struct {
	pos  token.Pos
	what string // "func F", "method T.M", "type T", "const C", "var V"
}

// undocumented returns f's exported identifiers that go doc would show
// without a doc comment, in source order. A function, or a method whose
// receiver's type is exported, needs its own doc comment. A type,
// constant or variable needs a doc comment of its own or, when declared
// in a parenthesised group, one on the group. A comment holding only
// directives (//go:..., //nolint:...) is no doc comment, nor is a
// trailing line comment.
func undocumented(f *ast.File) []finding {
	var out []finding
	for _, decl := range f.Decls {
		switch d := decl.(type) {
		case *ast.FuncDecl:
			if !d.Name.IsExported() || hasDoc(d.Doc) {
				continue
			}
			if d.Recv == nil {
				out = append(out, finding{d.Name.Pos(), "func " + d.Name.Name})
				continue
			}
			recv := receiverType(d.Recv.List[0].Type)
			if recv == nil || !recv.IsExported() {
				continue // a method of an unexported type is not shown
			}
			out = append(out, finding{d.Name.Pos(), "method " + recv.Name + "." + d.Name.Name})
		case *ast.GenDecl:
			if d.Tok == token.IMPORT {
				continue
			}
			// A group's doc comment covers what it groups; for an
			// unparenthesised declaration it is the declaration's own.
			if hasDoc(d.Doc) {
				continue
			}
			for _, spec := range d.Specs {
				switch s := spec.(type) {
				case *ast.TypeSpec:
					if s.Name.IsExported() && !hasDoc(s.Doc) {
						out = append(out, finding{s.Name.Pos(), "type " + s.Name.Name})
					}
				case *ast.ValueSpec:
					if hasDoc(s.Doc) {
						continue
					}
					for _, n := range s.Names {
						if n.IsExported() {
							out = append(out, finding{n.Pos(), d.Tok.String() + " " + n.Name})
						}
					}
				}
			}
		}
	}
	return out
}

// hasDoc reports whether c holds text beyond directives.
func hasDoc(c *ast.CommentGroup) bool {
	return c != nil && strings.TrimSpace(c.Text()) != ""
}

// receiverType is the named type of a method receiver (T, *T, T[K], *T[K, V]),
// or nil for a form it does not know.
func receiverType(e ast.Expr) *ast.Ident {
	for {
		switch x := e.(type) {
		case *ast.Ident:
			return x
		case *ast.StarExpr:
			e = x.X
		case *ast.ParenExpr:
			e = x.X
		case *ast.IndexExpr:
			e = x.X
		case *ast.IndexListExpr:
			e = x.X
		default:
			return nil
		}
	}
}

// moduleRoot is the module's root directory: go test runs the test in
// this package's directory, internal/apidoc. It fails the test when there
// is no go.mod there.
func moduleRoot(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatalf("module root: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		t.Fatalf("module root: no go.mod in %s: %v", dir, err)
	}
	return dir
}
