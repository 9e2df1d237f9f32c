-- A new tariff version never rewrites costs already computed: while a site has a version
-- in effect, a new one must start in the future. (A site's first tariff may start in the
-- past: nothing was costed before it.)
CREATE OR REPLACE FUNCTION wl_tariff_starts_ahead() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.valid_from < now()
       AND EXISTS (SELECT 1 FROM tariffs WHERE site_id = NEW.site_id AND valid_from <= now())
       AND current_setting('wattline.allow_history_rewrite', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'a new tariff version must start in the future (the site is already costed from %)',
            (SELECT min(valid_from) FROM tariffs WHERE site_id = NEW.site_id)
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
DROP TRIGGER IF EXISTS tariffs_start_ahead ON tariffs;
CREATE TRIGGER tariffs_start_ahead BEFORE INSERT ON tariffs
    FOR EACH ROW EXECUTE FUNCTION wl_tariff_starts_ahead();
