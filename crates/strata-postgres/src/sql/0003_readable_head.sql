-- Strata schema version 3: the readable head's search when the watermark is held back.
-- `{schema}` is replaced by the configured schema name before this runs.

-- The highest visible position below p_below whose transaction_id is below p_xmin (NULL when
-- there is none), by binary search over the position index: O(log n) index probes however many
-- rows lie between it and p_below.
--
-- Every read of `$all` computes the readable head h (docs/guarantees.md, "PostgreSQL
-- ordering") by walking the position index down from the top to the first row whose
-- transaction is below the watermark. That takes a row or two, unless a transaction older than
-- every append in flight stays open (anywhere in the cluster): then every row appended since
-- lies above h, and the walk would read them all, on every read. The reads walk at most
-- WATERMARK_SCAN_ROWS rows and call this below them.
--
-- It relies on Lemma 1: transaction ids increase with positions (rows of one transaction share
-- one id), so the rows below p_xmin are a prefix of the position order. Each probe reads the
-- first visible row at or after the middle of the range: if its transaction is below p_xmin,
-- the head is at or above it; otherwise (or with no row there) the head is below the middle.
-- STABLE: it reads with the calling statement's snapshot, the one the watermark came from.
CREATE OR REPLACE FUNCTION {schema}.strata_readable_head(p_xmin XID8, p_below BIGINT)
RETURNS BIGINT LANGUAGE plpgsql STABLE AS $fn$
DECLARE
    v_lo   BIGINT;
    v_hi   BIGINT := p_below - 1;
    v_mid  BIGINT;
    v_pos  BIGINT;
    v_xid  XID8;
    v_best BIGINT := NULL;
BEGIN
    SELECT e.position INTO v_lo FROM {schema}.events e ORDER BY e.position LIMIT 1;
    IF v_lo IS NULL THEN
        RETURN NULL;
    END IF;
    WHILE v_lo <= v_hi LOOP
        v_mid := v_lo + (v_hi - v_lo) / 2;
        SELECT e.position, e.transaction_id INTO v_pos, v_xid FROM {schema}.events e
            WHERE e.position >= v_mid AND e.position <= v_hi ORDER BY e.position LIMIT 1;
        IF FOUND AND v_xid < p_xmin THEN
            v_best := v_pos;
            v_lo := v_pos + 1;
        ELSE
            v_hi := v_mid - 1;
        END IF;
    END LOOP;
    RETURN v_best;
END
$fn$;
