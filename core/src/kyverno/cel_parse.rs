//! A small subset of CEL's grammar, parsed into [`Expr`] for the shapes
//! [`cel`](super::cel) recognises: identifiers, string and integer
//! literals, lists, member access (`.` and `?.`), calls, `!`, `&&`, `||`,
//! comparisons, `in`, `+`, `-` and `?:`. Nesting is bounded
//! ([`MAX_NESTING`]); anything else is a parse error, which the importer
//! refuses.

/// Deepest expression nesting the parser follows.
const MAX_NESTING: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Expr {
    Ident(String),
    Str(String),
    Int(i64),
    Bool(bool),
    List(Vec<Expr>),
    /// `a.b` (`optional`: `a.?b`).
    Member(Box<Expr>, String, bool),
    /// `recv.f(args)` or `f(args)`.
    Call(Option<Box<Expr>>, String, Vec<Expr>),
    Not(Box<Expr>),
    Binary(String, Box<Expr>, Box<Expr>),
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Int(i64),
    Punct(&'static str),
}

const PUNCT: &[&str] = &[
    "&&", "||", "==", "!=", "<=", ">=", ".", "(", ")", "[", "]", ",", "!", "<", ">", "+", "-", "?",
    ":",
];

fn lex(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let digits: String = chars[start..i].iter().collect();
            out.push(Token::Int(
                digits.parse().map_err(|_| "a number too large")?,
            ));
        } else if c == '\'' || c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err("an unterminated string".into()),
                    Some(&q) if q == c => break,
                    Some('\\') => {
                        i += 1;
                        match chars.get(i) {
                            Some('n') => s.push('\n'),
                            Some(&e @ ('\\' | '\'' | '"')) => s.push(e),
                            _ => return Err("an escape the importer does not read".into()),
                        }
                    }
                    Some(&other) => s.push(other),
                }
                i += 1;
            }
            i += 1;
            out.push(Token::Str(s));
        } else {
            let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
            let Some(p) = PUNCT.iter().find(|p| rest.starts_with(**p)) else {
                return Err(format!("the character {c:?}"));
            };
            out.push(Token::Punct(p));
            i += p.chars().count();
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self, p: &str) -> bool {
        matches!(self.tokens.get(self.at), Some(Token::Punct(q)) if *q == p)
    }

    fn eat(&mut self, p: &str) -> bool {
        let yes = self.peek(p);
        self.at += usize::from(yes);
        yes
    }

    fn expect(&mut self, p: &str) -> Result<(), String> {
        if self.eat(p) {
            Ok(())
        } else {
            Err(format!("`{p}` expected"))
        }
    }

    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, String>) -> Result<T, String> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(format!("nested deeper than {MAX_NESTING}"));
        }
        let out = f(self);
        self.depth -= 1;
        out
    }

    fn expr(&mut self) -> Result<Expr, String> {
        self.nested(|p| {
            let cond = p.binary(0)?;
            if p.eat("?") {
                let yes = p.expr()?;
                p.expect(":")?;
                let no = p.expr()?;
                return Ok(Expr::Ternary(Box::new(cond), Box::new(yes), Box::new(no)));
            }
            Ok(cond)
        })
    }

    fn binary(&mut self, level: usize) -> Result<Expr, String> {
        const LEVELS: &[&[&str]] = &[
            &["||"],
            &["&&"],
            &["==", "!=", "<=", ">=", "<", ">", "in"],
            &["+", "-"],
        ];
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut left = self.binary(level + 1)?;
        loop {
            let op = LEVELS[level].iter().find(|op| {
                if **op == "in" {
                    matches!(self.tokens.get(self.at), Some(Token::Ident(i)) if i == "in")
                } else {
                    self.peek(op)
                }
            });
            let Some(op) = op else { return Ok(left) };
            self.at += 1;
            let right = self.nested(|p| p.binary(level + 1))?;
            left = Expr::Binary(op.to_string(), Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("!") {
            return self.nested(|p| Ok(Expr::Not(Box::new(p.unary()?))));
        }
        let mut e = self.primary()?;
        loop {
            if self.eat(".") {
                // `a.?b`: CEL's optional field selection.
                let optional = self.eat("?");
                let Some(Token::Ident(name)) = self.tokens.get(self.at).cloned() else {
                    return Err("a name expected after `.`".into());
                };
                self.at += 1;
                if self.eat("(") {
                    let args = self.args(")")?;
                    e = Expr::Call(Some(Box::new(e)), name, args);
                } else {
                    e = Expr::Member(Box::new(e), name, optional);
                }
            } else if self.peek("[") {
                return Err("indexing is not recognised".into());
            } else {
                return Ok(e);
            }
        }
    }

    fn args(&mut self, close: &str) -> Result<Vec<Expr>, String> {
        let mut args = Vec::new();
        if self.eat(close) {
            return Ok(args);
        }
        loop {
            args.push(self.expr()?);
            if self.eat(close) {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let token = self
            .tokens
            .get(self.at)
            .cloned()
            .ok_or("an unexpected end")?;
        self.at += 1;
        Ok(match token {
            Token::Str(s) => Expr::Str(s),
            Token::Int(n) => Expr::Int(n),
            Token::Ident(i) if i == "true" || i == "false" => Expr::Bool(i == "true"),
            Token::Ident(i) => {
                if self.eat("(") {
                    Expr::Call(None, i, self.args(")")?)
                } else {
                    Expr::Ident(i)
                }
            }
            Token::Punct("(") => {
                let e = self.expr()?;
                self.expect(")")?;
                e
            }
            Token::Punct("[") => Expr::List(self.nested(|p| p.args("]"))?),
            Token::Punct(p) => return Err(format!("`{p}` unexpected")),
        })
    }
}

/// Parses one expression.
pub(super) fn parse(text: &str) -> Result<Expr, String> {
    let tokens = lex(text)?;
    let mut p = Parser {
        tokens,
        at: 0,
        depth: 0,
    };
    let e = p.expr()?;
    if p.at != p.tokens.len() {
        return Err("text after the expression".into());
    }
    Ok(e)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn the_parser_is_bounded() {
        let deep = format!("{}true{}", "(".repeat(200), ")".repeat(200));
        assert!(parse(&deep).unwrap_err().contains("nested"));
        let negations = format!("{}true", "!".repeat(200));
        assert!(parse(&negations).is_err());
        assert!(parse("'unterminated").is_err());
    }
}
