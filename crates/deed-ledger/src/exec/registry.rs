//! The model registry: register, publish versions, update terms, transfer, deprecate,
//! and the royalty split along a model's lineage.

use deed_types::{Address, Amount, Cid, Licence, Lineage, ModelId, BPS_DENOMINATOR};

use super::{bps_of, Exec};
use crate::error::TxError;
use crate::events::{Event, Reason};
use crate::state::{Model, Version};

impl<'a> Exec<'a> {
    fn owned_model(&self, sender: Address, model: ModelId) -> Result<Model, TxError> {
        let m = self
            .s
            .models
            .get(&model)
            .cloned()
            .ok_or(TxError::UnknownModel(model))?;
        if m.owner != sender {
            return Err(TxError::NotOwner {
                model,
                owner: m.owner,
                sender,
            });
        }
        Ok(m)
    }

    pub(super) fn register_model(
        &mut self,
        sender: Address,
        name: &str,
        description: &str,
        licence: &Licence,
        price: Amount,
        lineage: Option<Lineage>,
    ) -> Result<(), TxError> {
        if name.is_empty() {
            return Err(TxError::EmptyName);
        }
        if self.s.model_names.contains(&(sender, name.to_owned())) {
            return Err(TxError::DuplicateName {
                owner: sender,
                name: name.to_owned(),
            });
        }
        if let Some(l) = lineage {
            // The parent must already exist, so every lineage points to older models
            // and no cycle can ever form.
            if !self.s.models.contains(&l.parent) {
                return Err(TxError::UnknownModel(l.parent));
            }
            if u128::from(l.upstream_bps) > BPS_DENOMINATOR {
                return Err(TxError::BadShare(l.upstream_bps));
            }
        }
        let id = ModelId(self.s.meta.next_model);
        self.s.meta.next_model = self
            .s
            .meta
            .next_model
            .checked_add(1)
            .ok_or(TxError::Overflow("model id"))?;
        self.s.models.insert(
            id,
            Model {
                owner: sender,
                name: name.to_owned(),
                description: description.to_owned(),
                licence: licence.clone(),
                price,
                lineage,
                versions: 0,
                created: self.env.height,
            },
        );
        self.s.model_names.insert((sender, name.to_owned()), id);
        self.events.push(Event::ModelRegistered {
            model: id,
            owner: sender,
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn publish_version(
        &mut self,
        sender: Address,
        model: ModelId,
        manifest: Cid,
        io_schema: &str,
        steps: u64,
        cost: u64,
        notes: &str,
    ) -> Result<(), TxError> {
        let mut m = self.owned_model(sender, model)?;
        if steps == 0 {
            return Err(TxError::WrongStepCount {
                expected: 1,
                got: 0,
            });
        }
        m.versions = m
            .versions
            .checked_add(1)
            .ok_or(TxError::Overflow("version number"))?;
        let version = m.versions;
        self.s.versions.insert(
            (model, version),
            Version {
                manifest,
                io_schema: io_schema.to_owned(),
                steps,
                cost,
                notes: notes.to_owned(),
                deprecated: false,
                published: self.env.height,
            },
        );
        self.s.models.insert(model, m);
        self.events.push(Event::VersionPublished {
            model,
            version,
            manifest,
        });
        Ok(())
    }

    pub(super) fn update_model(
        &mut self,
        sender: Address,
        model: ModelId,
        price: Option<Amount>,
        licence: &Option<Licence>,
        description: &Option<String>,
    ) -> Result<(), TxError> {
        let mut m = self.owned_model(sender, model)?;
        if let Some(p) = price {
            m.price = p;
        }
        if let Some(l) = licence {
            m.licence = l.clone();
        }
        if let Some(d) = description {
            m.description = d.clone();
        }
        self.s.models.insert(model, m);
        self.events.push(Event::ModelUpdated { model });
        Ok(())
    }

    pub(super) fn transfer_model(
        &mut self,
        sender: Address,
        model: ModelId,
        to: Address,
    ) -> Result<(), TxError> {
        let mut m = self.owned_model(sender, model)?;
        let new_key = (to, m.name.clone());
        if self.s.model_names.contains(&new_key) {
            return Err(TxError::DuplicateName {
                owner: to,
                name: m.name,
            });
        }
        self.s.model_names.remove(&(sender, m.name.clone()));
        self.s.model_names.insert(new_key, model);
        m.owner = to;
        self.s.models.insert(model, m);
        self.events.push(Event::ModelTransferred {
            model,
            from: sender,
            to,
        });
        Ok(())
    }

    pub(super) fn deprecate_version(
        &mut self,
        sender: Address,
        model: ModelId,
        version: u32,
    ) -> Result<(), TxError> {
        self.owned_model(sender, model)?;
        let mut v = self
            .s
            .versions
            .get(&(model, version))
            .cloned()
            .ok_or(TxError::UnknownVersion { model, version })?;
        v.deprecated = true;
        self.s.versions.insert((model, version), v);
        self.events
            .push(Event::VersionDeprecated { model, version });
        Ok(())
    }

    /// Pays a royalty for `model`: each level keeps its share and passes
    /// `upstream_bps` of what it received to its parent, for at most
    /// `max_lineage_depth` levels; the last level reached keeps the remainder.
    pub(crate) fn pay_royalty(&mut self, model: ModelId, amount: Amount) -> Result<(), TxError> {
        let mut current = model;
        let mut remaining = amount;
        let mut depth = 0u64;
        while remaining > 0 {
            let m = self
                .s
                .models
                .get(&current)
                .cloned()
                .ok_or(TxError::UnknownModel(current))?;
            match m.lineage {
                Some(l)
                    if depth < self.s.params.max_lineage_depth
                        && self.s.models.contains(&l.parent) =>
                {
                    let up = bps_of(remaining, u128::from(l.upstream_bps))
                        .ok_or(TxError::Overflow("royalty share"))?;
                    self.credit(m.owner, remaining - up, Reason::Royalty)?;
                    remaining = up;
                    current = l.parent;
                    depth += 1;
                }
                _ => {
                    self.credit(m.owner, remaining, Reason::Royalty)?;
                    remaining = 0;
                }
            }
        }
        Ok(())
    }
}
