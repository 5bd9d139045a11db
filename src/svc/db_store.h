/*
 * db_store.h - the store of the distributed database (db_store.c): every
 * share this node knows, per family and subkey every owner's entry and
 * which one is visible (the winner rule), and the differences that
 * db_mon reports.
 *
 * The store is pure (no I/O, no node): it takes shares and changes and
 * keeps what they make visible. What changed since the last look is kept
 * per family that someone watches (aemp__dbs_watch) and handed out by
 * aemp__dbs_take_diff. The service (db.c, db.h) is built on it.
 */
#ifndef AEMP_SVC_DB_STORE_H
#define AEMP_SVC_DB_STORE_H

#include "../proc/proc.h"

typedef struct aemp__dbs aemp__dbs;
typedef struct aemp__dbs_owner aemp__dbs_owner;
typedef struct aemp__dbs_fam aemp__dbs_fam;

/* Bytes counted for an entry beside its family, subkey and value: what
 * one costs in the store (measured: about 210 bytes with short strings,
 * 100,000 entries of one owner). */
#define AEMP__DBS_ENTRY_COST 256

/* One visible entry of a family. */
typedef struct aemp__dbs_ent {
    const char *subkey; /* NUL-terminated (a subkey holding NUL is cut there) */
    size_t subkey_len;
    aemp_term value;
    uint32_t owner_h; /* the winning owner's node name (interned), 0: a pg member */
    uint64_t stamp;
} aemp__dbs_ent;

aemp__dbs *aemp__dbs_new(void);
void aemp__dbs_free(aemp__dbs *s);

/* An owner of entries: this node (self), a peer's aemp_db server, or the
 * pg members (node_h 0: entries with stamp 0, below every real entry).
 * node_h is the owner's node name, interned. */
aemp__dbs_owner *aemp__dbs_owner_new(aemp__dbs *s, uint32_t node_h);
/* Drop every entry of the owner (counted as changes) and free it. */
void aemp__dbs_owner_free(aemp__dbs *s, aemp__dbs_owner *o);
/* Drop every entry of the owner, keep the owner. */
void aemp__dbs_owner_clear(aemp__dbs *s, aemp__dbs_owner *o);
/* Replacing an owner's whole share without telling watchers of entries
 * that stay the same: mark, set every entry of the new share (an entry set
 * again with the same stamp and value is no change), then sweep, which
 * drops the entries not set since the mark. */
void aemp__dbs_owner_mark(aemp__dbs_owner *o);
void aemp__dbs_owner_sweep(aemp__dbs *s, aemp__dbs_owner *o);
/* Bytes the owner's entries take (as counted against limits). */
size_t aemp__dbs_owner_bytes(const aemp__dbs_owner *o);
/* What an entry of these sizes counts. */
static inline size_t aemp__dbs_cost(size_t flen, size_t klen, size_t vlen)
{
    return flen + klen + vlen + AEMP__DBS_ENTRY_COST;
}

/* Set the owner's entry (family, subkey) to value with stamp (copied);
 * the same stamp and value again changes nothing. */
int aemp__dbs_set(aemp__dbs *s, aemp__dbs_owner *o, const char *fam, size_t flen, const char *key,
                  size_t klen, uint64_t stamp, const aemp_term *value);
/* Delete the owner's entry; AEMP_ENOENT if it has none. */
int aemp__dbs_del(aemp__dbs *s, aemp__dbs_owner *o, const char *fam, size_t flen, const char *key,
                  size_t klen);
/* The owner's own entry (its stamp in *stamp, may be NULL); AEMP_ENOENT if none. */
int aemp__dbs_own(aemp__dbs *s, aemp__dbs_owner *o, const char *fam, size_t flen, const char *key,
                  size_t klen, uint64_t *stamp);

/* A received Share (protocol version 3: #{Family => {#{Subkey => Value},
 * Stamps}}, Stamps a binary of whole records <<KeyLen:32,
 * Subkey:KeyLen/binary, Stamp:64>>, each value's stamp the last record's
 * for its subkey, 0 if none; records for no value only count for
 * *maxstamp) or Ops ([{set, Family, Subkey, Stamp, Value} | {del, Family,
 * Subkey}], stamps of at most 64 bits) at the cursor, families and
 * subkeys (KeyLen too) of at most AEMP_DB_MAXKEY bytes. With apply NULL:
 * checked whole, *bytes and *maxstamp add what it holds (the cost of its
 * entries, its greatest stamp); else applied to owner apply of s (only
 * after a check passed: then only AEMP_ENOMEM can fail, leaving part
 * applied). AEMP_ENOMATCH for another shape. */
int aemp__dbs_walk_share(aemp__dbs *s, aemp__dbs_owner *apply, aemp_cursor *c, size_t *bytes,
                         uint64_t *maxstamp);
int aemp__dbs_walk_ops(aemp__dbs *s, aemp__dbs_owner *apply, aemp_cursor *c, size_t *bytes,
                       uint64_t *maxstamp);

/* Append the owner's whole share as the protocol's Share term:
 * #{Family => {#{Subkey => Value}, Stamps}}, every subkey once in the
 * Stamps binary, in the order of the map. AEMP_ENOMEM, or AEMP_ETOOBIG
 * for a family whose Stamps would pass 4 GiB (out as it was). */
int aemp__dbs_encode_share(aemp__dbs *s, aemp__dbs_owner *o, aemp_buf *out);

/* The family, or NULL if it has neither entries nor watchers. */
aemp__dbs_fam *aemp__dbs_family(aemp__dbs *s, const char *fam, size_t flen);
/* Visible entries of a family (NULL: none): count and the i-th (0 <= i <
 * count; order is arbitrary but stable while nothing changes). */
size_t aemp__dbs_count(const aemp__dbs_fam *f);
void aemp__dbs_at(const aemp__dbs_fam *f, size_t i, aemp__dbs_ent *e);
/* The visible entry of subkey; AEMP_ENOENT if none. */
int aemp__dbs_get(const aemp__dbs_fam *f, const char *key, size_t klen, aemp__dbs_ent *e);
/* The family's name. */
const char *aemp__dbs_fam_name(const aemp__dbs_fam *f, size_t *len);

/* Watching: while a family's watch count is above 0, the store records
 * which subkeys of it change (first state of each since the last diff).
 * aemp__dbs_watch returns the family (created if needed), or NULL when out
 * of memory. */
aemp__dbs_fam *aemp__dbs_watch(aemp__dbs *s, const char *fam, size_t flen);
void aemp__dbs_unwatch(aemp__dbs *s, aemp__dbs_fam *f);

/* The families with recorded changes, taken out one at a time: NULL when
 * there are none. */
aemp__dbs_fam *aemp__dbs_next_dirty(aemp__dbs *s);
bool aemp__dbs_has_dirty(const aemp__dbs *s);
/* What changed in f since it was last taken: subkeys added (visible now,
 * not before), changed (visible before and now, another winner) and
 * deleted (visible before, not now), NUL-terminated and valid until
 * aemp__dbs_diff_done(). A subkey set and deleted in between is in none. */
typedef struct aemp__dbs_diff {
    const char **added, **changed, **deleted;
    size_t nadded, nchanged, ndeleted;
} aemp__dbs_diff;
int aemp__dbs_take_diff(aemp__dbs *s, aemp__dbs_fam *f, aemp__dbs_diff *d);
void aemp__dbs_diff_done(aemp__dbs *s, aemp__dbs_fam *f, aemp__dbs_diff *d);
/* Hold f alive (not freed while empty and unwatched) across callbacks. */
void aemp__dbs_hold(aemp__dbs_fam *f);
void aemp__dbs_release(aemp__dbs *s, aemp__dbs_fam *f);

/* Compare the winner rule's keys: {Stamp, OwnerNode} with node names
 * compared as Erlang compares atoms. <0, 0, >0. */
int aemp__dbs_cmp(uint64_t sa, uint32_t oa, uint64_t sb, uint32_t ob);

#endif
