//! Forwarding [`Migration`] to a wrapped migration: the macro wrappers
//! use, and the impls for `Box` and `Arc`.

use std::sync::Arc;

use arrow_schema::{Schema, SchemaRef};
use async_trait::async_trait;

use crate::backup::Backup;
use crate::error::Result;
use crate::migration::{Migration, MigrationContext, MigrationPlan, TableInfo};

/// Implements [`Migration`] for a wrapper by forwarding the methods listed
/// in `forward` to the wrapped migration in field `$inner`; the block holds
/// the wrapper's own methods. The impl denies
/// `clippy::missing_trait_methods`, so every trait method is either
/// forwarded or written out: a method added to the trait cannot be dropped
/// silently by a wrapper.
///
/// ```ignore
/// forward_migration! {
///     impl[M: Migration] Wrapper<M> => inner;
///     forward [id, table, definition, checksum, previous_checksums, creates, expected_schema, plan, resumable, blocks_serving, backup, transform, rebuild];
///     { async fn verify(&self, ctx: &MigrationContext) -> Result<()> { ... } }
/// }
/// ```
macro_rules! forward_migration {
    (
        impl[$($gen:tt)*] $ty:ty => $inner:ident;
        forward [$($method:ident),* $(,)?];
        { $($own:tt)* }
    ) => {
        $crate::migration::forward_migration!(@acc [$($gen)*] [$ty] $inner [$($method)*] [] { $($own)* });
    };
    (@acc $g:tt $t:tt $i:ident [id $($rest:ident)*] [$($acc:tt)*] $own:tt) => {
        $crate::migration::forward_migration!(@acc $g $t $i [$($rest)*] [$($acc)*
            fn id(&self) -> &str { self.$i.id() }
        ] $own);
    };
    (@acc $g:tt $t:tt $i:ident [table $($rest:ident)*] [$($acc:tt)*] $own:tt) => {
        $crate::migration::forward_migration!(@acc $g $t $i [$($rest)*] [$($acc)*
            fn table(&self) -> &str { self.$i.table() }
        ] $own);
    };
    (@acc $g:tt $t:tt $i:ident [definition $($rest:ident)*] [$($acc:tt)*] $own:tt) => {
        $crate::migration::forward_migration!(@acc $g $t $i [$($rest)*] [$($acc)*
            fn definition(&self) -> String { self.$i.definition() }
        ] $own);
    };
    (@acc $g:tt $t:tt $i:ident [checksum $($rest:ident)*] [$($acc:tt)*] $own:tt) => {
        $crate::migration::forward_migration!(@acc $g $t $i [$($rest)*] [$($acc)*
            fn checksum(&self) -> String { self.$i.checksum() }
        ] $own);
    };
    (@acc $g:tt $t:tt $i:ident [previous_checksums $($rest:ident)*] [$($acc:tt)*] $own:tt) => {
        $crate::migration::forward_migration!(@acc $g $t $i [$($rest)*] [$($acc)*
            fn previous_checksums(&self) -> Vec<String> { self.$i.previous_checksums() }
        ] $own);
    };
    (@acc $g:tt $t:tt $i:ident [creates $($rest:ident)*] [$($acc:tt)*] $own:tt) => {
        $crate::migration::forward_migration!(@acc $g $t $i [$($rest)*] [$($acc)*
            fn creates(&self) -> Option<::arrow_schema::SchemaRef> { self.$i.creates() }
        ] $own);
    };
    (@acc $g:tt $t:tt $i:ident [expected_schema $($rest:ident)*] [$($acc:tt)*] $own:tt) => {
        $crate::migration::forward_migration!(@acc $g $t $i [$($rest)*] [$($acc)*
            fn expected_schema(&self, before: &::arrow_schema::Schema) -> $crate::Result<::arrow_schema::Schema> {
                self.$i.expected_schema(before)
            }
        ] $own);
    };
    (@acc $g:tt $t:tt $i:ident [plan $($rest:ident)*] [$($acc:tt)*] $own:tt) => {
        $crate::migration::forward_migration!(@acc $g $t $i [$($rest)*] [$($acc)*
            fn plan(&self, table: &$crate::TableInfo) -> $crate::Result<$crate::MigrationPlan> {
                self.$i.plan(table)
            }
        ] $own);
    };
    (@acc $g:tt $t:tt $i:ident [blocks_serving $($rest:ident)*] [$($acc:tt)*] $own:tt) => {
        $crate::migration::forward_migration!(@acc $g $t $i [$($rest)*] [$($acc)*
            fn blocks_serving(&self) -> bool { self.$i.blocks_serving() }
        ] $own);
    };
    (@acc $g:tt $t:tt $i:ident [resumable $($rest:ident)*] [$($acc:tt)*] $own:tt) => {
        $crate::migration::forward_migration!(@acc $g $t $i [$($rest)*] [$($acc)*
            fn resumable(&self) -> bool { self.$i.resumable() }
        ] $own);
    };
    (@acc $g:tt $t:tt $i:ident [backup $($rest:ident)*] [$($acc:tt)*] $own:tt) => {
        $crate::migration::forward_migration!(@acc $g $t $i [$($rest)*] [$($acc)*
            async fn backup(&self, ctx: &$crate::MigrationContext) -> $crate::Result<$crate::Backup> {
                self.$i.backup(ctx).await
            }
        ] $own);
    };
    (@acc $g:tt $t:tt $i:ident [transform $($rest:ident)*] [$($acc:tt)*] $own:tt) => {
        $crate::migration::forward_migration!(@acc $g $t $i [$($rest)*] [$($acc)*
            async fn transform(&self, ctx: &$crate::MigrationContext) -> $crate::Result<()> {
                self.$i.transform(ctx).await
            }
        ] $own);
    };
    (@acc $g:tt $t:tt $i:ident [rebuild $($rest:ident)*] [$($acc:tt)*] $own:tt) => {
        $crate::migration::forward_migration!(@acc $g $t $i [$($rest)*] [$($acc)*
            async fn rebuild(&self, ctx: &$crate::MigrationContext) -> $crate::Result<()> {
                self.$i.rebuild(ctx).await
            }
        ] $own);
    };
    (@acc $g:tt $t:tt $i:ident [verify $($rest:ident)*] [$($acc:tt)*] $own:tt) => {
        $crate::migration::forward_migration!(@acc $g $t $i [$($rest)*] [$($acc)*
            async fn verify(&self, ctx: &$crate::MigrationContext) -> $crate::Result<()> {
                self.$i.verify(ctx).await
            }
        ] $own);
    };
    (@acc [$($gen:tt)*] [$ty:ty] $i:ident [] [$($acc:tt)*] { $($own:tt)* }) => {
        #[::async_trait::async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<$($gen)*> $crate::Migration for $ty {
            $($acc)*
            $($own)*
        }
    };
}

pub(crate) use forward_migration;

/// [`Migration`] for smart pointers to migrations, so that `Box<dyn
/// Migration>` and `Arc<M>` are migrations too.
macro_rules! forward_pointer {
    ($ptr:ident) => {
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<M: Migration + ?Sized> Migration for $ptr<M> {
            fn id(&self) -> &str {
                (**self).id()
            }
            fn table(&self) -> &str {
                (**self).table()
            }
            fn definition(&self) -> String {
                (**self).definition()
            }
            fn checksum(&self) -> String {
                (**self).checksum()
            }
            fn previous_checksums(&self) -> Vec<String> {
                (**self).previous_checksums()
            }
            fn creates(&self) -> Option<SchemaRef> {
                (**self).creates()
            }
            fn expected_schema(&self, before: &Schema) -> Result<Schema> {
                (**self).expected_schema(before)
            }
            fn resumable(&self) -> bool {
                (**self).resumable()
            }
            fn blocks_serving(&self) -> bool {
                (**self).blocks_serving()
            }
            fn plan(&self, table: &TableInfo) -> Result<MigrationPlan> {
                (**self).plan(table)
            }
            async fn backup(&self, ctx: &MigrationContext) -> Result<Backup> {
                (**self).backup(ctx).await
            }
            async fn transform(&self, ctx: &MigrationContext) -> Result<()> {
                (**self).transform(ctx).await
            }
            async fn rebuild(&self, ctx: &MigrationContext) -> Result<()> {
                (**self).rebuild(ctx).await
            }
            async fn verify(&self, ctx: &MigrationContext) -> Result<()> {
                (**self).verify(ctx).await
            }
        }
    };
}

forward_pointer!(Box);
forward_pointer!(Arc);
