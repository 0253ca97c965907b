CREATE TABLE `messages` (
	`id` bigint unsigned AUTO_INCREMENT NOT NULL,
	`session_id` char(36) character set ascii collate ascii_bin NOT NULL,
	`role` enum('user','assistant','system') NOT NULL,
	`content` longtext character set utf8mb4 collate utf8mb4_bin NOT NULL,
	`created_at` datetime(3) NOT NULL,
	CONSTRAINT `messages_id` PRIMARY KEY(`id`)
);
--> statement-breakpoint
CREATE TABLE `sessions` (
	`id` char(36) character set ascii collate ascii_bin NOT NULL,
	`agent_id` varbinary(768) NOT NULL,
	`cwd` longblob,
	`cwd_hash` binary(32) GENERATED ALWAYS AS (unhex(sha2(cwd, 256))) STORED,
	`metadata` longtext character set utf8mb4 collate utf8mb4_bin,
	`created_at` datetime(3) NOT NULL,
	`updated_at` datetime(3) NOT NULL,
	CONSTRAINT `sessions_id` PRIMARY KEY(`id`)
);
--> statement-breakpoint
ALTER TABLE `messages` ADD CONSTRAINT `messages_session_id_sessions_id_fk` FOREIGN KEY (`session_id`) REFERENCES `sessions`(`id`) ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX `messages_session_idx` ON `messages` (`session_id`,`id`);--> statement-breakpoint
CREATE INDEX `sessions_agent_updated_idx` ON `sessions` (`agent_id`,`updated_at`,`id`);--> statement-breakpoint
CREATE INDEX `sessions_agent_cwd_updated_idx` ON `sessions` (`agent_id`,`cwd_hash`,`updated_at`,`id`);