//! Topic templates: an MQTT topic filter whose levels may be named placeholders.
//!
//! `plant/{line}/{sensor}/value` subscribes as `plant/+/+/value` and binds `line` and `sensor`
//! from each message's topic; an entity template such as `{line}.{sensor}` then builds the
//! entity id. `+` matches one level without binding it; `#` (last level only) matches the rest.

use std::fmt;

/// A parsed topic template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    levels: Vec<Level>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    Placeholder(String),
    SingleWildcard,
    MultiWildcard,
}

/// A template that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("topic template is empty")]
    Empty,
    #[error("`#` must be the last level of `{0}`")]
    HashNotLast(String),
    #[error("level `{level}` of `{template}` mixes a placeholder or wildcard with text; a placeholder must be a whole level")]
    PartialLevel { template: String, level: String },
    #[error("placeholder `{{{name}}}` appears twice in `{template}`")]
    DuplicatePlaceholder { template: String, name: String },
    #[error("entity template uses `{{{name}}}`, which the topic template does not define")]
    UnknownPlaceholder { name: String },
    #[error("unbalanced braces in `{0}`")]
    Unbalanced(String),
    #[error("template uses `{{{name}}}`; available placeholders: {allowed}")]
    NotAvailable { name: String, allowed: String },
}

impl TopicTemplate {
    pub fn parse(template: &str) -> Result<TopicTemplate, TemplateError> {
        if template.is_empty() {
            return Err(TemplateError::Empty);
        }
        let parts: Vec<&str> = template.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "+" => Level::SingleWildcard,
                "#" if i + 1 == parts.len() => Level::MultiWildcard,
                "#" => return Err(TemplateError::HashNotLast(template.into())),
                p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => {
                    let name = &p[1..p.len() - 1];
                    if name.contains(['{', '}', '+', '#']) {
                        return Err(TemplateError::PartialLevel { template: template.into(), level: p.into() });
                    }
                    if levels.iter().any(|l| matches!(l, Level::Placeholder(n) if n == name)) {
                        return Err(TemplateError::DuplicatePlaceholder { template: template.into(), name: name.into() });
                    }
                    Level::Placeholder(name.into())
                }
                p if p.contains(['{', '}', '+', '#']) => {
                    return Err(TemplateError::PartialLevel { template: template.into(), level: p.into() })
                }
                p => Level::Literal(p.into()),
            };
            levels.push(level);
        }
        Ok(TopicTemplate { levels })
    }

    /// The MQTT subscription filter (`{x}` → `+`).
    pub fn filter(&self) -> String {
        self.to_string()
    }

    /// Binds placeholders against a concrete topic; `None` if the topic does not match.
    /// Returned pairs are in template order.
    pub fn bind<'t>(&'t self, topic: &'t str) -> Option<Vec<(&'t str, &'t str)>> {
        let mut bound = Vec::new();
        let mut parts = topic.split('/');
        for level in &self.levels {
            match level {
                Level::MultiWildcard => return Some(bound),
                _ => {
                    let part = parts.next()?;
                    match level {
                        Level::Literal(l) if l != part => return None,
                        Level::Placeholder(name) => bound.push((name.as_str(), part)),
                        _ => {}
                    }
                }
            }
        }
        parts.next().is_none().then_some(bound)
    }

    /// Checks that every `{name}` in an entity template is defined by this topic template.
    pub fn check_entity_template(&self, entity: &str) -> Result<(), TemplateError> {
        for name in placeholders(entity)? {
            if !self.levels.iter().any(|l| matches!(l, Level::Placeholder(n) if n == name)) {
                return Err(TemplateError::UnknownPlaceholder { name: name.into() });
            }
        }
        Ok(())
    }
}

impl fmt::Display for TopicTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, level) in self.levels.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            match level {
                Level::Literal(l) => f.write_str(l)?,
                Level::Placeholder(_) | Level::SingleWildcard => f.write_str("+")?,
                Level::MultiWildcard => f.write_str("#")?,
            }
        }
        Ok(())
    }
}

/// Checks that a template (e.g. a source's entity template) uses only the `allowed`
/// placeholders and that its braces balance.
pub fn check_placeholders(template: &str, allowed: &[&str]) -> Result<(), TemplateError> {
    for name in placeholders(template)? {
        if !allowed.contains(&name) {
            let allowed = allowed.iter().map(|a| format!("{{{a}}}")).collect::<Vec<_>>().join(", ");
            return Err(TemplateError::NotAvailable { name: name.into(), allowed });
        }
    }
    Ok(())
}

/// The `{name}`s of a template string, in order.
fn placeholders(template: &str) -> Result<Vec<&str>, TemplateError> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| TemplateError::Unbalanced(template.into()))?;
        names.push(&after[..close]);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(TemplateError::Unbalanced(template.into()));
    }
    Ok(names)
}

/// Fills `{name}`s in `template` from `bound`. Unknown names are left as they are (templates
/// are checked at config load, so this does not happen for configured templates).
pub fn render(template: &str, bound: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}') {
            Some(close) => {
                let name = &after[..close];
                match bound.iter().find(|(n, _)| *n == name) {
                    Some((_, v)) => out.push_str(v),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[close + 1..];
            }
            None => {
                out.push_str(&rest[open..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_placeholders_and_builds_filter() {
        let t = TopicTemplate::parse("plant/{line}/{sensor}/value").unwrap();
        assert_eq!(t.filter(), "plant/+/+/value");
        let b = t.bind("plant/l1/temp3/value").unwrap();
        assert_eq!(b, vec![("line", "l1"), ("sensor", "temp3")]);
        assert_eq!(render("{line}.{sensor}", &b), "l1.temp3");
        assert!(t.bind("plant/l1/temp3/other").is_none());
        assert!(t.bind("plant/l1/temp3/value/x").is_none());
        assert!(t.bind("plant/l1/value").is_none());
    }

    #[test]
    fn hash_matches_rest() {
        let t = TopicTemplate::parse("site/{area}/#").unwrap();
        assert_eq!(t.filter(), "site/+/#");
        assert_eq!(t.bind("site/a/b/c").unwrap(), vec![("area", "a")]);
    }

    #[test]
    fn rejects_bad_templates() {
        assert!(matches!(TopicTemplate::parse("a/#/b"), Err(TemplateError::HashNotLast(_))));
        assert!(matches!(TopicTemplate::parse("a/x{y}"), Err(TemplateError::PartialLevel { .. })));
        assert!(matches!(TopicTemplate::parse("{a}/{a}"), Err(TemplateError::DuplicatePlaceholder { .. })));
        let t = TopicTemplate::parse("a/{b}").unwrap();
        assert!(t.check_entity_template("{b}.x").is_ok());
        assert!(matches!(t.check_entity_template("{c}"), Err(TemplateError::UnknownPlaceholder { .. })));
    }
}
