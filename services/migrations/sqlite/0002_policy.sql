-- The serialized HTTP cache policy that conditional revalidation is built from.
ALTER TABLE entries ADD COLUMN policy TEXT;
