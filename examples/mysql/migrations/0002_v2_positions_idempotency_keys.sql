CREATE TABLE `idempotency_keys` (
	`session_id` char(36) character set ascii collate ascii_bin NOT NULL,
	`seq` int unsigned NOT NULL,
	`idempotency_key` varbinary(768) NOT NULL,
	`fingerprint` varbinary(255) NOT NULL,
	`length` int unsigned NOT NULL,
	`popped` longtext character set utf8mb4 collate utf8mb4_bin,
	CONSTRAINT `idempotency_keys_session_id_seq_pk` PRIMARY KEY(`session_id`,`seq`),
	CONSTRAINT `idempotency_keys_session_key_idx` UNIQUE(`session_id`,`idempotency_key`)
);
--> statement-breakpoint
ALTER TABLE `idempotency_keys` ADD CONSTRAINT `idempotency_keys_session_id_sessions_id_fk` FOREIGN KEY (`session_id`) REFERENCES `sessions`(`id`) ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE `messages` ADD `position` int unsigned NOT NULL;--> statement-breakpoint
-- Edited by hand from here on (drizzle-kit does not write data migrations, and it dropped the old index first,
-- which the foreign key on session_id still needs). The rows stored before this migration took position 0: number
-- each session's messages in the order of their ids, which was the append order, then make the positions unique.
UPDATE `messages` JOIN (
  SELECT `id`, row_number() OVER (PARTITION BY `session_id` ORDER BY `id`) - 1 AS `n` FROM `messages`
) AS `numbered` USING (`id`)
SET `messages`.`position` = `numbered`.`n`;--> statement-breakpoint
ALTER TABLE `messages` ADD CONSTRAINT `messages_session_position_idx` UNIQUE(`session_id`,`position`);--> statement-breakpoint
DROP INDEX `messages_session_idx` ON `messages`;
